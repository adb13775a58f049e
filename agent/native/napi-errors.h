/*
 * The N-API error helpers every ambit addon uses (sockets.c, memory.c, inpod-routing.c): a failed N-API call, and an
 * errno turned into a JS Error with `code` (the errno name), `errno` (negative, as Node's own) and `syscall` (the
 * step that failed), so callers branch on code.
 *
 * Owns: the shape of those errors. Must not know about: what the addons do.
 */
#ifndef AMBIT_NAPI_ERRORS_H
#define AMBIT_NAPI_ERRORS_H

#include <node_api.h>
#include <stdio.h>
#include <string.h>

#define CHECK_NAPI(env, call)                                   \
  do {                                                          \
    if ((call) != napi_ok) {                                    \
      napi_throw_error((env), "EINTERNAL", "N-API call failed: " #call); \
      return NULL;                                              \
    }                                                           \
  } while (0)

/* Throws `<syscall> <ERRNAME>[ <detail>]: <strerror>`; returns NULL for the caller to return. */
static inline napi_value throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  char message[4400];
  const char *name = strerrorname_np(err);
  if (name == NULL) name = "EUNKNOWN";
  snprintf(message, sizeof message, "%s %s%s%s: %s", syscall, name, detail ? " " : "", detail ? detail : "", strerror(err));
  napi_value msg, code, error, errno_value, syscall_value;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, -err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_throw(env, error);
  return NULL;
}

#endif
