#include <stdarg.h>
#include <stdio.h>

#include "../xk_internal.h"

static XK_THREAD_LOCAL char g_msg[512];

xk_status xk_fail(xk_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_msg, sizeof g_msg, fmt, ap);
  va_end(ap);
  return status;
}

void xk_clear_error(void) { g_msg[0] = '\0'; }

const char *xk_last_error(void) { return g_msg; }
