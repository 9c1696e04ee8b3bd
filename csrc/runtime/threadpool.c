/* A small persistent thread pool for the kernels.
 *
 * Work is a range of independent tasks claimed one at a time from an atomic counter. The
 * calling thread publishes the job, wakes the helpers and starts claiming tasks itself at
 * once; at the end it waits only for tasks that a helper has already claimed and is running.
 * A helper that has not woken up yet simply finds nothing left to claim, so on a busy, shared
 * machine a call is never slower than running it on the calling thread alone.
 *
 * The calling thread claims tasks from the front of the range, the helpers from the back. The
 * ops number their tasks in image order (rows of output), so with two threads the caller
 * keeps the top of every image and the helper the bottom, op after op: what one op writes,
 * the next op mostly reads on the same core, from its own L2, instead of pulling it from the
 * other core (with claims in one order, which rows a thread got was left to chance, and
 * small ops ran slower on 2 threads than on 1).
 *
 * The claim word packs (generation << 40 | next front task << 20 | end of the back); a helper
 * claims only within the generation it was woken for, so a late helper can never take a task
 * of a newer job.
 *
 * After a job a helper keeps polling for the next one for XK_SPIN_US microseconds before it
 * sleeps on the condition variable, and the caller signals only when a helper sleeps: the ops
 * of a model run back to back, and waking a sleeping thread (a system call, and on a virtual
 * machine an interrupt to a halted vCPU) costs tens of microseconds, as much as a small op.
 * Each thread has a worker index (xk_worker(): 0 for the caller, 1, 2, ... for the helpers) and
 * xk_parallel_run() caps how many take part, so an op can keep one workspace slot per worker
 * and still hand out many small tasks: on this shared machine one of the two vCPUs is often
 * slowed for a while, and with one task per thread the op waited for the slow one (the
 * Bi-Real Net stem's 2-thread median: 1.63 ms with 2 tasks, 1.29 ms with one task per tile,
 * same minimum).
 *
 * Build with XK_NO_THREADS (microcontrollers) for a serial implementation. */
#if !defined(_POSIX_C_SOURCE) && !defined(XK_NO_THREADS)
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthreads under -std=c99/c11 */
#endif
#include <stdlib.h>

#include "../xk_internal.h"

#ifdef XK_NO_THREADS

void xk_set_num_threads(int n) { (void)n; }
int xk_get_num_threads(void) { return 1; }
void xk_parallel_for(size_t ntasks, xk_task_fn fn, void *ctx) {
  for (size_t t = 0; t < ntasks; t++) fn(ctx, t);
}
void xk_parallel_run(size_t ntasks, size_t max_workers, xk_task_fn fn, void *ctx) {
  (void)max_workers;
  xk_parallel_for(ntasks, fn, ctx);
}
size_t xk_worker(void) { return 0; }

#else

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include <time.h>

#ifndef XK_SPIN_US
#define XK_SPIN_US 200
#endif

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static uint64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static struct {
  pthread_mutex_t mu;      /* guards sleeping on the condition variable */
  pthread_cond_t cv;
  pthread_mutex_t job_mu;  /* one job at a time; a concurrent caller runs serially */
  pthread_t threads[XK_MAX_THREADS];
  int nhelpers;            /* helpers started so far */
  _Atomic uint32_t gen_published; /* written by the job's caller only (job_mu) */
  _Atomic int sleepers;    /* helpers waiting (or about to wait) on cv */
  _Atomic uint64_t claim;  /* gen << 40 | front << 20 | back: tasks [front, back) left */
  _Atomic size_t done;
  _Atomic size_t nworkers; /* helpers with an index >= this sit the job out */
  xk_task_fn fn;
  void *ctx;
} g_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .job_mu = PTHREAD_MUTEX_INITIALIZER};

static _Atomic int g_nthreads = 0; /* 0: not resolved */
static XK_THREAD_LOCAL size_t t_worker; /* 0 on every thread but the helpers (1, 2, ...) */

size_t xk_worker(void) { return t_worker; }

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

#define CLAIM_BITS 20
#define CLAIM_MASK ((UINT64_C(1) << CLAIM_BITS) - 1)
#define GEN_MASK UINT32_C(0xffffff) /* generations as stored in the claim word */

/* Claim and run tasks of generation gen until none is left: from the front (the caller) or
 * from the back (helpers). */
static void run_claims(uint32_t gen, int from_back) {
  gen &= GEN_MASK;
  for (;;) {
    uint64_t v = atomic_load_explicit(&g_pool.claim, memory_order_acquire), next;
    size_t task;
    for (;;) {
      const uint64_t front = (v >> CLAIM_BITS) & CLAIM_MASK, back = v & CLAIM_MASK;
      if ((uint32_t)(v >> (2 * CLAIM_BITS)) != gen || front >= back) return;
      next = from_back ? v - 1 : v + (UINT64_C(1) << CLAIM_BITS);
      task = (size_t)(from_back ? back - 1 : front);
      if (atomic_compare_exchange_weak_explicit(&g_pool.claim, &v, next, memory_order_acq_rel,
                                                memory_order_acquire))
        break;
    }
    /* The job cannot finish (and its parameters cannot change) before this task is done. */
    g_pool.fn(g_pool.ctx, task);
    atomic_fetch_add_explicit(&g_pool.done, 1, memory_order_release);
  }
}

/* The next generation after `seen`: polled for XK_SPIN_US, then waited for on cv. */
static uint32_t wait_next(uint32_t seen) {
  uint32_t g = atomic_load(&g_pool.gen_published);
  if (g != seen) return g;
  uint64_t t0 = now_us();
  for (unsigned i = 1;; i++) {
    cpu_relax();
    if ((g = atomic_load(&g_pool.gen_published)) != seen) return g;
    if (i % 64 == 0 && now_us() - t0 > XK_SPIN_US) break;
  }
  pthread_mutex_lock(&g_pool.mu);
  atomic_fetch_add(&g_pool.sleepers, 1); /* seq_cst: the caller reads it after publishing */
  while ((g = atomic_load(&g_pool.gen_published)) == seen) pthread_cond_wait(&g_pool.cv, &g_pool.mu);
  atomic_fetch_sub(&g_pool.sleepers, 1);
  pthread_mutex_unlock(&g_pool.mu);
  return g;
}

static void *helper_main(void *arg) {
  t_worker = (size_t)(uintptr_t)arg;
  uint32_t seen = atomic_load(&g_pool.gen_published);
  for (;;) {
    seen = wait_next(seen);
    /* read after the generation: this job's count or a newer job's (whose claim word then
     * holds another generation, so run_claims returns at once) */
    if (t_worker < atomic_load_explicit(&g_pool.nworkers, memory_order_relaxed)) run_claims(seen, 1);
  }
  return NULL;
}

static void ensure_helpers(int want) {
  while (g_pool.nhelpers < want && g_pool.nhelpers < XK_MAX_THREADS - 1) {
    if (pthread_create(&g_pool.threads[g_pool.nhelpers], NULL, helper_main,
                       (void *)(uintptr_t)(g_pool.nhelpers + 1)) != 0)
      break;
    pthread_detach(g_pool.threads[g_pool.nhelpers]);
    g_pool.nhelpers++;
  }
}

void xk_parallel_run(size_t ntasks, size_t max_workers, xk_task_fn fn, void *ctx) {
  size_t nthreads = (size_t)xk_get_num_threads();
  if (nthreads > max_workers) nthreads = max_workers;
  if (ntasks == 0) return;
  if (ntasks == 1 || nthreads <= 1 || ntasks > CLAIM_MASK ||
      pthread_mutex_trylock(&g_pool.job_mu) != 0) {
    for (size_t t = 0; t < ntasks; t++) fn(ctx, t);
    return;
  }
  ensure_helpers((int)nthreads - 1);
  g_pool.fn = fn;
  g_pool.ctx = ctx;
  atomic_store_explicit(&g_pool.nworkers, nthreads, memory_order_relaxed);
  atomic_store_explicit(&g_pool.done, 0, memory_order_relaxed);
  uint32_t gen = (atomic_load(&g_pool.gen_published) + 1) & GEN_MASK;
  if (gen == 0) gen = 1; /* 0 is never a live generation */
  /* the claim word (and the job above) first, then the generation helpers poll for */
  atomic_store_explicit(&g_pool.claim, ((uint64_t)gen << (2 * CLAIM_BITS)) | (uint64_t)ntasks, memory_order_release);
  atomic_store(&g_pool.gen_published, gen); /* seq_cst, ordered before reading sleepers */
  if (atomic_load(&g_pool.sleepers) > 0) {
    pthread_mutex_lock(&g_pool.mu);
    pthread_cond_broadcast(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
  }

  run_claims(gen, 0);
  for (unsigned spins = 0; atomic_load_explicit(&g_pool.done, memory_order_acquire) < ntasks; spins++)
    if (spins > 64) sched_yield();
  pthread_mutex_unlock(&g_pool.job_mu);
}

void xk_parallel_for(size_t ntasks, xk_task_fn fn, void *ctx) { xk_parallel_run(ntasks, SIZE_MAX, fn, ctx); }

#endif
