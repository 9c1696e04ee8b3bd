/* A small persistent thread pool for the kernels.
 *
 * Work is a range of independent tasks claimed one at a time from an atomic counter. The
 * calling thread publishes the job, wakes the helpers and starts claiming tasks itself at
 * once; at the end it waits only for tasks that a helper has already claimed and is running.
 * A helper that has not woken up yet simply finds nothing left to claim, so on a busy, shared
 * machine a call is never slower than running it on the calling thread alone.
 *
 * The claim word packs (generation << 32 | tasks left); a helper claims only within the
 * generation it was woken for, so a late helper can never take a task of a newer job.
 * Build with XK_NO_THREADS (microcontrollers) for a serial implementation. */
#include <stdlib.h>

#include "../xk_internal.h"

#ifdef XK_NO_THREADS

void xk_set_num_threads(int n) { (void)n; }
int xk_get_num_threads(void) { return 1; }
void xk_parallel_for(size_t ntasks, xk_task_fn fn, void *ctx) {
  for (size_t t = 0; t < ntasks; t++) fn(ctx, t);
}

#else

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define XK_MAX_THREADS 64

static struct {
  pthread_mutex_t mu;      /* guards gen_published and the condition variable */
  pthread_cond_t cv;
  pthread_mutex_t job_mu;  /* one job at a time; a concurrent caller runs serially */
  pthread_t threads[XK_MAX_THREADS];
  int nhelpers;            /* helpers started so far */
  uint32_t gen_published;
  _Atomic uint64_t claim;  /* gen << 32 | tasks left */
  _Atomic size_t done;
  size_t ntasks;
  xk_task_fn fn;
  void *ctx;
} g_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .job_mu = PTHREAD_MUTEX_INITIALIZER};

static _Atomic int g_nthreads = 0; /* 0: not resolved */

static int default_threads(void) {
  const char *env = getenv("XK_NUM_THREADS");
  if (env && atoi(env) > 0) return atoi(env);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void xk_set_num_threads(int n) {
  if (n < 1) n = 1;
  if (n > XK_MAX_THREADS) n = XK_MAX_THREADS;
  atomic_store(&g_nthreads, n);
}

int xk_get_num_threads(void) {
  int n = atomic_load(&g_nthreads);
  if (n == 0) {
    xk_set_num_threads(default_threads());
    n = atomic_load(&g_nthreads);
  }
  return n;
}

static void run_claims(uint32_t gen) {
  for (;;) {
    uint64_t v = atomic_load_explicit(&g_pool.claim, memory_order_acquire);
    for (;;) {
      if ((uint32_t)(v >> 32) != gen || (uint32_t)v == 0) return;
      if (atomic_compare_exchange_weak_explicit(&g_pool.claim, &v, v - 1, memory_order_acq_rel,
                                                memory_order_acquire))
        break;
    }
    /* The job cannot finish (and its parameters cannot change) before this task is done. */
    size_t task = g_pool.ntasks - (uint32_t)v;
    g_pool.fn(g_pool.ctx, task);
    atomic_fetch_add_explicit(&g_pool.done, 1, memory_order_release);
  }
}

static void *helper_main(void *arg) {
  (void)arg;
  uint32_t seen = 0;
  pthread_mutex_lock(&g_pool.mu);
  seen = g_pool.gen_published;
  for (;;) {
    while (g_pool.gen_published == seen) pthread_cond_wait(&g_pool.cv, &g_pool.mu);
    seen = g_pool.gen_published;
    pthread_mutex_unlock(&g_pool.mu);
    run_claims(seen);
    pthread_mutex_lock(&g_pool.mu);
  }
  return NULL;
}

static void ensure_helpers(int want) {
  while (g_pool.nhelpers < want && g_pool.nhelpers < XK_MAX_THREADS - 1) {
    if (pthread_create(&g_pool.threads[g_pool.nhelpers], NULL, helper_main, NULL) != 0) break;
    pthread_detach(g_pool.threads[g_pool.nhelpers]);
    g_pool.nhelpers++;
  }
}

void xk_parallel_for(size_t ntasks, xk_task_fn fn, void *ctx) {
  int nthreads = xk_get_num_threads();
  if (ntasks == 0) return;
  if (ntasks == 1 || nthreads == 1 || ntasks > UINT32_MAX ||
      pthread_mutex_trylock(&g_pool.job_mu) != 0) {
    for (size_t t = 0; t < ntasks; t++) fn(ctx, t);
    return;
  }
  ensure_helpers(nthreads - 1);
  g_pool.fn = fn;
  g_pool.ctx = ctx;
  g_pool.ntasks = ntasks;
  atomic_store_explicit(&g_pool.done, 0, memory_order_relaxed);
  pthread_mutex_lock(&g_pool.mu);
  uint32_t gen = ++g_pool.gen_published;
  if (gen == 0) gen = ++g_pool.gen_published; /* skip 0 after wrap-around */
  atomic_store_explicit(&g_pool.claim, ((uint64_t)gen << 32) | (uint64_t)ntasks, memory_order_release);
  pthread_cond_broadcast(&g_pool.cv);
  pthread_mutex_unlock(&g_pool.mu);

  run_claims(gen);
  for (unsigned spins = 0; atomic_load_explicit(&g_pool.done, memory_order_acquire) < ntasks; spins++)
    if (spins > 64) sched_yield();
  pthread_mutex_unlock(&g_pool.job_mu);
}

#endif
