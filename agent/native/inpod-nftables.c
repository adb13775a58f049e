/*
 * ambit_inpod_nftables: sends one nf_tables netlink batch (built by agent/inpod/nft-batch.ts) inside a pod's network
 * namespace, instead of an iptables-nft-restore process reading the same rules as text.
 *
 * A process costs the node 10-16 ms of CPU for these rules (the dynamic loader and eight xtables extensions); the
 * batch is one sendmsg. setns is per thread: the calling thread enters the pod's namespace only to make the
 * NETLINK_NETFILTER socket (it stays bound to the namespace it was made in), returns at once, and sends from home.
 * nfnetlink applies a batch inside the sendmsg call, all of it or none of it (a failed message aborts the whole
 * transaction), and queues an error for each failed message before sendmsg returns; so the answers are read without
 * waiting, as iptables-nft itself does.
 *
 *   sendNftablesBatch(netns, batch) -> null | { code, errno, seq }
 *     null: the batch was committed. An object: the kernel refused it (nothing of it applied); `seq` is the refused
 *     message's sequence number (the batch numbers them from 1), `code`/`errno` the kernel's reason (EEXIST: a chain
 *     the batch creates exclusively is there already).
 * Failures to reach the kernel (no namespace, no socket, a short send) throw a JS Error with `code`, `errno` and
 * `syscall`, as sockets.c.
 *
 * Owns: delivering a batch and reading its verdict. Must not know about: what the batch holds (rules, tables, pods).
 */
#define _GNU_SOURCE
#include "napi-errors.h"
#include "netns-visit.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/netlink.h>

/* Errors for a refused batch: one nlmsgerr (with the refused message echoed) per failed message; a few KiB. */
#define ANSWER_BYTES 65536
/* A batch of the in-pod rules is about 6 KiB; anything far larger is not one the agent built. */
#define MAX_BATCH_BYTES (1024 * 1024)

/* A NETLINK_NETFILTER socket made inside `netns_path`; -1 with *err and *step set. */
static int netfilter_socket_in(const char *netns_path, int *err, const char **step) {
  int target = netns_visit_enter(netns_path, err, step);
  if (target < 0) return -1;
  int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  int nl_errno = errno;
  netns_visit_leave(target, "ambit_inpod_nftables");
  if (nl < 0) { *err = nl_errno; *step = "socket(NETLINK_NETFILTER)"; return -1; }
  return nl;
}

static napi_value refusal(napi_env env, int err, uint32_t seq) {
  napi_value result, code, errno_value, seq_value;
  const char *name = strerrorname_np(err);
  CHECK_NAPI(env, napi_create_object(env, &result));
  CHECK_NAPI(env, napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code));
  CHECK_NAPI(env, napi_create_int32(env, -err, &errno_value));
  CHECK_NAPI(env, napi_create_uint32(env, seq, &seq_value));
  CHECK_NAPI(env, napi_set_named_property(env, result, "code", code));
  CHECK_NAPI(env, napi_set_named_property(env, result, "errno", errno_value));
  CHECK_NAPI(env, napi_set_named_property(env, result, "seq", seq_value));
  return result;
}

static napi_value send_nftables_batch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, args, NULL, NULL));
  char netns[4096];
  size_t len = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, args[0], netns, sizeof netns, &len) != napi_ok || len + 1 >= sizeof netns
      || netns[0] != '/') {
    napi_throw_type_error(env, "EINVAL", "expected (netns: absolute path, batch: Buffer)");
    return NULL;
  }
  void *batch = NULL;
  size_t batch_len = 0;
  bool is_buffer = false;
  if (napi_is_buffer(env, args[1], &is_buffer) != napi_ok || !is_buffer
      || napi_get_buffer_info(env, args[1], &batch, &batch_len) != napi_ok || batch_len < sizeof(struct nlmsghdr)
      || batch_len > MAX_BATCH_BYTES) {
    napi_throw_type_error(env, "EINVAL", "batch must be a Buffer of netlink messages");
    return NULL;
  }
  int err = 0;
  const char *step = NULL;
  int nl = netfilter_socket_in(netns, &err, &step);
  if (nl < 0) return throw_errno(env, err, step, netns);
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  ssize_t sent;
  do sent = sendto(nl, batch, batch_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  if (sent < 0 || (size_t)sent != batch_len) {
    err = sent < 0 ? errno : EMSGSIZE;
    close(nl);
    return throw_errno(env, err, "sendmsg(nf_tables batch)", netns);
  }
  /* Applied (or refused) inside sendto: whatever the kernel has to say is queued now. */
  static char answer[ANSWER_BYTES] __attribute__((aligned(NLMSG_ALIGNTO)));
  int refused = 0;
  uint32_t refused_seq = 0;
  for (;;) {
    ssize_t n = recv(nl, answer, sizeof answer, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      err = errno;
      close(nl);
      return throw_errno(env, err, "recv(nf_tables batch)", netns);
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)answer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) { refused = EPROTO; refused_seq = h->nlmsg_seq; continue; }
      const struct nlmsgerr *error = NLMSG_DATA(h);
      /* The first refusal names the cause; the ones after it are the transaction's abort. */
      if (error->error != 0 && refused == 0) { refused = -error->error; refused_seq = h->nlmsg_seq; }
    }
  }
  close(nl);
  if (refused != 0) return refusal(env, refused, refused_seq);
  napi_value null_value;
  CHECK_NAPI(env, napi_get_null(env, &null_value));
  return null_value;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"sendNftablesBatch", NULL, send_nftables_batch, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
