/*
 * netns-visit.h: a thread's short visit to another network namespace, for the addons that make a socket (or open a
 * file) there and use it from home. setns is per thread: the calling thread enters the namespace, makes what it
 * needs (a socket stays bound to the namespace it was made in), and comes back at once; if it cannot come back the
 * process aborts rather than run on in the wrong namespace.
 *
 * The home namespace (the node's, for the agent) is opened once per addon, by the first visit, and kept for the
 * process's life: an open and a close of /proc/thread-self/ns/net per visit cost 20-70 us under load here. A
 * thread leaves home only inside a visit and always comes back (or aborts), so whichever thread opens it, at that
 * moment its own namespace is the home one.
 *
 *   int target = netns_visit_enter(path, &err, &step);   -1: not entered, nothing open, err/step say why
 *   ... socket() / open() in the namespace ...
 *   netns_visit_leave(target, "ambit_sockets");           back home (or abort), the namespace's descriptor closed
 *
 * or, with a namespace descriptor the caller keeps open (a captured pod's, held by its socket factory):
 *   if (netns_visit_enter_fd(held, &err, &step) != 0) ...; ...; netns_visit_leave(-1, "ambit_sockets");
 *
 * Owns: entering and leaving. Must not know about: what is made inside.
 */
#ifndef AMBIT_NETNS_VISIT_H
#define AMBIT_NETNS_VISIT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int netns_home = -1;
static int netns_home_errno = 0;
static pthread_once_t netns_home_once = PTHREAD_ONCE_INIT;

static void netns_open_home(void) {
  netns_home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (netns_home < 0) netns_home_errno = errno;
}

/* Enters the namespace of `target`, a descriptor the caller holds (and keeps): 0, or -1 with *err and *step set. */
static inline int netns_visit_enter_fd(int target, int *err, const char **step) {
  pthread_once(&netns_home_once, netns_open_home);
  if (netns_home < 0) { *err = netns_home_errno; *step = "open /proc/thread-self/ns/net"; return -1; }
  if (setns(target, CLONE_NEWNET) != 0) { *err = errno; *step = "setns"; return -1; }
  return 0;
}

/* Enters the namespace at `path`; its open descriptor (for netns_visit_leave), or -1 with *err and *step set. */
static inline int netns_visit_enter(const char *path, int *err, const char **step) {
  pthread_once(&netns_home_once, netns_open_home);
  if (netns_home < 0) { *err = netns_home_errno; *step = "open /proc/thread-self/ns/net"; return -1; }
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) { *err = errno; *step = "open"; return -1; }
  if (netns_visit_enter_fd(target, err, step) != 0) {
    close(target);
    return -1;
  }
  return target;
}

/*
 * Back to the home namespace (aborting the process if the kernel refuses); `opened`, the descriptor
 * netns_visit_enter opened, is closed (-1 after netns_visit_enter_fd: the caller's stays open).
 */
static inline void netns_visit_leave(int opened, const char *addon) {
  if (setns(netns_home, CLONE_NEWNET) != 0) {
    fprintf(stderr, "%s: cannot return to own network namespace: %s\n", addon, strerror(errno));
    abort();
  }
  if (opened >= 0) close(opened);
}

#endif
