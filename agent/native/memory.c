/*
 * ambit_memory: giving memory back to the kernel, which Node.js cannot ask for by itself.
 *
 * Owns: malloc_trim (glibc keeps freed native memory, e.g. OpenSSL's and nghttp2's after a connection storm, in
 * its arenas until asked) and dropping this process's mappings of its own executable's read-only pages (the node
 * binary: start-up touches tens of MiB of it, relocation tables, the embedded snapshot and JavaScript sources, code
 * run once, and those pages stay counted in the process's RSS for its whole life).
 *
 * Dropping is safe by construction: only mappings of /proc/self/exe that are not writable and hold no anonymous
 * (copy-on-write) page are unmapped with MADV_DONTNEED; their content is the file's, so a page used again is
 * faulted back in from the page cache (a minor fault, no I/O while the file stays cached). A read-only mapping
 * that was written before it became read-only (RELRO) has anonymous pages and is left alone.
 *
 * Must not know about: V8, the agent, when to call these (agent/memory/heap-release.ts decides).
 */
#define _GNU_SOURCE
#include "napi-errors.h"
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* trimMalloc() -> true when glibc gave memory back (malloc_trim(0): every arena, top and free pages inside). */
static napi_value trim_malloc(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  CHECK_NAPI(env, napi_get_boolean(env, malloc_trim(0) != 0, &result));
  return result;
}

/* One mapping of /proc/self/smaps whose fields are still being read. */
struct mapping {
  unsigned long start, end;
  int candidate;        /* our executable, not writable */
  unsigned long rss_kib;
  unsigned long anonymous_kib;
  int anonymous_seen;
};

/* Unmaps a finished candidate mapping; adds the resident KiB it held to *dropped_kib. Returns 0 or an errno. */
static int drop_mapping(const struct mapping *m, unsigned long *dropped_kib) {
  if (!m->candidate || !m->anonymous_seen || m->anonymous_kib != 0 || m->rss_kib == 0) return 0;
  if (madvise((void *)m->start, m->end - m->start, MADV_DONTNEED) != 0) return errno;
  *dropped_kib += m->rss_kib;
  return 0;
}

/* dropExecutablePages() -> KiB that were resident in the dropped mappings (pages in use come back on their own). */
static napi_value drop_executable_pages(napi_env env, napi_callback_info info) {
  (void)info;
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0) return throw_errno(env, errno, "readlink /proc/self/exe", NULL);
  exe[n] = '\0';
  FILE *smaps = fopen("/proc/self/smaps", "re");
  if (!smaps) return throw_errno(env, errno, "open /proc/self/smaps", NULL);
  char line[PATH_MAX + 256];
  struct mapping current = {0};
  unsigned long dropped_kib = 0;
  int err = 0;
  while (!err && fgets(line, sizeof line, smaps)) {
    unsigned long start, end, offset, inode, kib;
    char perms[8], dev[16];
    int path_at = 0;
    if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &start, &end, perms, &offset, dev, &inode, &path_at) == 6) {
      /* The previous mapping's fields are complete: drop it now (before reading on, not while iterating it). */
      err = drop_mapping(&current, &dropped_kib);
      memset(&current, 0, sizeof current);
      current.start = start;
      current.end = end;
      char *path = line + path_at;
      path[strcspn(path, "\n")] = '\0';
      current.candidate = inode != 0 && perms[1] != 'w' && strcmp(path, exe) == 0;
    } else if (sscanf(line, "Rss: %lu kB", &kib) == 1) {
      current.rss_kib = kib;
    } else if (sscanf(line, "Anonymous: %lu kB", &kib) == 1) {
      current.anonymous_kib = kib;
      current.anonymous_seen = 1;
    }
  }
  if (!err) err = drop_mapping(&current, &dropped_kib);
  fclose(smaps);
  if (err) return throw_errno(env, err, "madvise MADV_DONTNEED", NULL);
  napi_value result;
  CHECK_NAPI(env, napi_create_double(env, (double)dropped_kib, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"trimMalloc", NULL, trim_malloc, NULL, NULL, NULL, napi_default, NULL},
    {"dropExecutablePages", NULL, drop_executable_pages, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
