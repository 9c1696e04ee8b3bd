// Bindings of the model engine (csrc/runtime): filled in by the engine work.
#include "common.h"

void bind_engine(nanobind::module_ &m) { (void)m; }
