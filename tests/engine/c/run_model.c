/* Loads a .xk file and runs it through the C engine API (include/xnorkit/xk_engine.h):
 *   run_model model.xk input.f32 output.f32 batch
 * The harness reads the files and allocates the arena; the engine itself allocates nothing.
 * Exit code 2 and the engine's message on a rejected file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xnorkit/xk_engine.h"

static void *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *p = aligned_alloc(64, ((size_t)n + 63) / 64 * 64 + 64);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
  fclose(f);
  *size = (size_t)n;
  return p;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: run_model model.xk input.f32 output.f32 batch\n"); return 1; }
  size_t size, in_size;
  void *data = read_file(argv[1], &size), *in = read_file(argv[2], &in_size);
  if (!data || !in) { fprintf(stderr, "cannot read inputs\n"); return 1; }
  size_t batch = (size_t)atoi(argv[4]);
  xk_model_options opt = {(uint32_t)batch, 2};
  size_t need;
  if (xk_model_arena_size(data, size, &opt, &need) != XK_OK) {
    printf("rejected: %s\n", xk_last_error());
    free(data);
    free(in);
    return 2;
  }
  void *arena = aligned_alloc(64, (need + 63) / 64 * 64);
  xk_model *m;
  if (xk_model_load(data, size, &opt, arena, need, &m) != XK_OK) { printf("rejected: %s\n", xk_last_error()); return 2; }
  xk_tensor_info ti, to;
  xk_model_input(m, 0, &ti);
  xk_model_output(m, 0, &to);
  if (in_size != batch * ti.count * sizeof(float)) { fprintf(stderr, "input size mismatch\n"); return 1; }
  float *out = malloc(batch * to.count * sizeof(float));
  if (xk_model_run(m, batch, (const float *)in, out) != XK_OK) { printf("run failed: %s\n", xk_last_error()); return 3; }
  /* again with the input written straight into the arena (xk_model_input_buffer: no copy) */
  float *buf = xk_model_input_buffer(m, 0, batch), *out2 = malloc(batch * to.count * sizeof(float));
  if (!buf || xk_model_input_buffer(m, xk_model_num_inputs(m), batch) || xk_model_input_buffer(m, 0, 0) ||
      xk_model_input_buffer(m, 0, batch + 1)) {
    printf("input buffer: wrong pointers\n");
    return 4;
  }
  memcpy(buf, in, in_size);
  if (xk_model_run(m, batch, buf, out2) != XK_OK) { printf("run failed: %s\n", xk_last_error()); return 3; }
  if (memcmp(out, out2, batch * to.count * sizeof(float))) { printf("input buffer: different outputs\n"); return 4; }
  free(out2);
  FILE *f = fopen(argv[3], "wb");
  fwrite(out, sizeof(float), batch * to.count, f);
  fclose(f);
  printf("ok %zu ops, arena %zu bytes\n", xk_model_num_ops(m), need);
  free(out);
  free(arena);
  free(data);
  free(in);
  return 0;
}
