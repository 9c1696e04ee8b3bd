// Shared by the binding files of xnorkit._core.
#pragma once
#include <nanobind/nanobind.h>

extern "C" {
#include "xnorkit/xk.h"
}

// Raise the Python exception matching an xk_status (ValueError for bad input).
void xk_check(xk_status s);

// Defined in engine.cpp: the model engine's bindings (xnorkit.Model).
void bind_engine(nanobind::module_ &m);
