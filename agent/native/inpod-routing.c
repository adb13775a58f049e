/*
 * ambit_inpod_routing: the policy routing that goes with the in-pod rules' marks, and the pod's tcp_migrate_req
 * sysctl, set over rtnetlink from the calling thread instead of by `ip` processes in the pod's namespace.
 *
 * A process costs the agent a fork and an exec wait (5-20 ms each on a loaded 2-core node; the shell that did this
 * ran four); this is a few netlink requests, each acknowledged, microseconds in all. setns is per thread: the
 * calling thread enters the pod's namespace only to make the netlink socket and open the sysctl file (both stay
 * bound to the namespace they were made in), returns at once, and does the requests from home.
 *
 *   setupPodRouting(netns, { ipv6, fwmark, fwmask, table, priority, sysctlPath }) -> created
 *     per family (IPv4, and IPv6 with ipv6): `ip route replace local <any>/0 dev lo table T` and, unless that
 *     exact rule is there, `ip rule add fwmark M/K pref P lookup T`; then writes "1" to sysctlPath opened inside
 *     the namespace (net sysctls resolve to the namespace of the thread that opens them). `created`: the IPv4
 *     rule was not there before (a fresh pod, not a re-install), so undoing this call's work is removing it all.
 *   removePodRouting(netns, { fwmark, fwmask, table, priority })
 *     both families: deletes that rule until none is left and the default route of table T; what is already gone
 *     (or a family the kernel does not have) is not an error.
 * Every failure becomes a JS Error with `code` (errno name), `errno` and `syscall` (the step, e.g.
 * "ip -6 rule add"), as in sockets.c.
 *
 * Owns: speaking rtnetlink for these two operations. Must not know about: which marks, tables or priorities (the
 * caller passes rules.ts's numbers), pods, iptables.
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
#include <sys/time.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/* The loopback device is the first one every network namespace registers. */
#define LOOPBACK_IFINDEX 1
/* A netlink answer we read: an ack or an error, never a dump. */
#define ANSWER_BYTES 8192
/* Seconds a request's ack may take (it comes at once): an EAGAIN error after that, never a hung thread. */
#define ACK_WAIT_S 2

struct routing_spec {
  uint32_t fwmark, fwmask, table, priority;
  int ipv6;
  char sysctl_path[4096];
};

struct request {
  struct nlmsghdr header;
  union {
    struct rtmsg route;
    struct fib_rule_hdr rule;
  } body;
  char attributes[128];
};

/*
 * Enters `netns_path`, makes a NETLINK_ROUTE socket there and (when sysctl_path is not NULL) opens that file for
 * writing there, then returns home. Returns 0, or -1 with *err and *step set and nothing left open.
 */
static int open_in_netns(const char *netns_path, const char *sysctl_path, int *nl_out, int *sysctl_out, int *err,
                         const char **step, const char **detail) {
  *detail = netns_path;
  int target = netns_visit_enter(netns_path, err, step);
  if (target < 0) return -1;
  int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  int nl_errno = errno;
  int sysctl = -1, sysctl_errno = 0;
  if (nl >= 0 && sysctl_path != NULL) {
    sysctl = open(sysctl_path, O_WRONLY | O_CLOEXEC);
    sysctl_errno = errno;
  }
  netns_visit_leave(target, "ambit_inpod_routing");
  if (nl < 0) { *err = nl_errno; *step = "socket(NETLINK_ROUTE)"; return -1; }
  /* The kernel acks at once; a bound on the wait keeps a misbehaving one from holding the agent's thread. */
  struct timeval ack_wait = { .tv_sec = ACK_WAIT_S, .tv_usec = 0 };
  if (setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &ack_wait, sizeof ack_wait) != 0) {
    *err = errno; *step = "setsockopt(SO_RCVTIMEO)";
    close(nl);
    if (sysctl >= 0) close(sysctl);
    return -1;
  }
  if (sysctl_path != NULL && sysctl < 0) {
    close(nl);
    *err = sysctl_errno; *step = "open sysctl"; *detail = sysctl_path;
    return -1;
  }
  *nl_out = nl;
  *sysctl_out = sysctl;
  return 0;
}

static void add_u32(struct request *request, unsigned short type, uint32_t value) {
  struct rtattr *attribute = (struct rtattr *)((char *)request + NLMSG_ALIGN(request->header.nlmsg_len));
  attribute->rta_type = type;
  attribute->rta_len = RTA_LENGTH(sizeof value);
  memcpy(RTA_DATA(attribute), &value, sizeof value);
  request->header.nlmsg_len = NLMSG_ALIGN(request->header.nlmsg_len) + RTA_ALIGN(attribute->rta_len);
}

/* Sends one request and reads its ack. Returns 0 or the kernel's errno (positive). */
static int transact(int nl, struct request *request, uint32_t seq) {
  request->header.nlmsg_seq = seq;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  ssize_t sent;
  do sent = sendto(nl, request, request->header.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;
  char answer[ANSWER_BYTES] __attribute__((aligned(NLMSG_ALIGNTO)));
  for (;;) {
    ssize_t n = recv(nl, answer, sizeof answer, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)answer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return EPROTO;
        const struct nlmsgerr *error = NLMSG_DATA(h);
        return -error->error;
      }
    }
  }
}

static void route_request(struct request *request, int family, uint16_t type, uint16_t flags, uint32_t table) {
  memset(request, 0, sizeof *request);
  request->header.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
  request->header.nlmsg_type = type;
  request->header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
  request->body.route.rtm_family = (unsigned char)family;
  request->body.route.rtm_table = table < 256 ? (unsigned char)table : RT_TABLE_UNSPEC;
  add_u32(request, RTA_TABLE, table);
}

static void rule_request(struct request *request, int family, uint16_t type, uint16_t flags, const struct routing_spec *spec) {
  memset(request, 0, sizeof *request);
  request->header.nlmsg_len = NLMSG_LENGTH(sizeof(struct fib_rule_hdr));
  request->header.nlmsg_type = type;
  request->header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
  request->body.rule.family = (unsigned char)family;
  request->body.rule.table = spec->table < 256 ? (unsigned char)spec->table : RT_TABLE_UNSPEC;
  request->body.rule.action = FR_ACT_TO_TBL;
  add_u32(request, FRA_PRIORITY, spec->priority);
  add_u32(request, FRA_FWMARK, spec->fwmark);
  add_u32(request, FRA_FWMASK, spec->fwmask);
  add_u32(request, FRA_TABLE, spec->table);
}

/* Setup for one family; returns 0 or an errno with *step set; *existed says the rule was there already. */
static int setup_family(int nl, int family, const struct routing_spec *spec, uint32_t *seq, const char **step, int *existed) {
  struct request request;
  route_request(&request, family, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, spec->table);
  /* What `ip route replace local <any>/0 dev lo` sends: a local route, host scope, protocol boot. */
  request.body.route.rtm_type = RTN_LOCAL;
  request.body.route.rtm_scope = RT_SCOPE_HOST;
  request.body.route.rtm_protocol = RTPROT_BOOT;
  add_u32(&request, RTA_OIF, LOOPBACK_IFINDEX);
  int err = transact(nl, &request, ++*seq);
  if (err != 0) { *step = family == AF_INET ? "ip route replace" : "ip -6 route replace"; return err; }
  /* NLM_F_EXCL: the kernel refuses an identical rule with EEXIST, so a re-install never adds a second one. */
  rule_request(&request, family, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, spec);
  err = transact(nl, &request, ++*seq);
  if (err != 0 && err != EEXIST) { *step = family == AF_INET ? "ip rule add" : "ip -6 rule add"; return err; }
  *existed = err == EEXIST;
  return 0;
}

static void remove_family(int nl, int family, const struct routing_spec *spec, uint32_t *seq) {
  struct request request;
  /* Every copy of the rule (an older agent may have left more than one); bounded in case the kernel misbehaves. */
  for (int i = 0; i < 64; i++) {
    rule_request(&request, family, RTM_DELRULE, 0, spec);
    if (transact(nl, &request, ++*seq) != 0) break;
  }
  for (int i = 0; i < 64; i++) {
    route_request(&request, family, RTM_DELROUTE, 0, spec->table);
    request.body.route.rtm_scope = RT_SCOPE_NOWHERE; /* as `ip route del`: any scope, any type */
    if (transact(nl, &request, ++*seq) != 0) break;
  }
}

static int get_string(napi_env env, napi_value value, char *out, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, out, size, &len) != napi_ok) return -1;
  return len + 1 < size && strlen(out) == len ? 0 : -1;
}

static int get_u32_prop(napi_env env, napi_value obj, const char *name, uint32_t *out) {
  napi_value value;
  if (napi_get_named_property(env, obj, name, &value) != napi_ok) return -1;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) return -1;
  return napi_get_value_uint32(env, value, out) == napi_ok ? 0 : -1;
}

/* Reads (netns, spec) arguments; with_setup also reads ipv6 and sysctlPath. Returns 0 or -1 with an exception. */
static int read_args(napi_env env, napi_callback_info info, char *netns, size_t netns_size, struct routing_spec *spec,
                     int with_setup) {
  size_t argc = 2;
  napi_value args[2];
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "EINVAL", "expected (netns, spec)");
    return -1;
  }
  if (get_string(env, args[0], netns, netns_size) != 0 || netns[0] != '/') {
    napi_throw_type_error(env, "EINVAL", "netns must be an absolute path");
    return -1;
  }
  memset(spec, 0, sizeof *spec);
  if (get_u32_prop(env, args[1], "fwmark", &spec->fwmark) != 0 || get_u32_prop(env, args[1], "fwmask", &spec->fwmask) != 0
      || get_u32_prop(env, args[1], "table", &spec->table) != 0 || get_u32_prop(env, args[1], "priority", &spec->priority) != 0) {
    napi_throw_type_error(env, "EINVAL", "spec needs numbers fwmark, fwmask, table and priority");
    return -1;
  }
  if (!with_setup) return 0;
  napi_value value;
  bool ipv6 = false;
  if (napi_get_named_property(env, args[1], "ipv6", &value) != napi_ok || napi_get_value_bool(env, value, &ipv6) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "spec.ipv6 must be a boolean");
    return -1;
  }
  spec->ipv6 = ipv6;
  if (napi_get_named_property(env, args[1], "sysctlPath", &value) != napi_ok
      || get_string(env, value, spec->sysctl_path, sizeof spec->sysctl_path) != 0 || spec->sysctl_path[0] != '/') {
    napi_throw_type_error(env, "EINVAL", "spec.sysctlPath must be an absolute path");
    return -1;
  }
  return 0;
}

static napi_value setup_pod_routing(napi_env env, napi_callback_info info) {
  char netns[4096];
  struct routing_spec spec;
  if (read_args(env, info, netns, sizeof netns, &spec, 1) != 0) return NULL;
  int nl = -1, sysctl = -1, err = 0;
  const char *step = NULL, *detail = NULL;
  if (open_in_netns(netns, spec.sysctl_path, &nl, &sysctl, &err, &step, &detail) != 0) return throw_errno(env, err, step, detail);
  uint32_t seq = 0;
  int existed4 = 0, existed6 = 0;
  err = setup_family(nl, AF_INET, &spec, &seq, &step, &existed4);
  if (err == 0 && spec.ipv6) err = setup_family(nl, AF_INET6, &spec, &seq, &step, &existed6);
  if (err == 0) {
    ssize_t written;
    do written = write(sysctl, "1\n", 2);
    while (written < 0 && errno == EINTR);
    if (written != 2) { err = written < 0 ? errno : EIO; step = "write"; }
  }
  close(nl);
  close(sysctl);
  if (err != 0) return throw_errno(env, err, step, strcmp(step, "write") == 0 ? spec.sysctl_path : netns);
  napi_value created;
  if (napi_get_boolean(env, !existed4, &created) != napi_ok) return NULL;
  return created;
}

static napi_value remove_pod_routing(napi_env env, napi_callback_info info) {
  char netns[4096];
  struct routing_spec spec;
  if (read_args(env, info, netns, sizeof netns, &spec, 0) != 0) return NULL;
  int nl = -1, unused = -1, err = 0;
  const char *step = NULL, *detail = NULL;
  if (open_in_netns(netns, NULL, &nl, &unused, &err, &step, &detail) != 0) return throw_errno(env, err, step, detail);
  uint32_t seq = 0;
  remove_family(nl, AF_INET, &spec, &seq);
  remove_family(nl, AF_INET6, &spec, &seq);
  close(nl);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"setupPodRouting", NULL, setup_pod_routing, NULL, NULL, NULL, napi_default, NULL},
    {"removePodRouting", NULL, remove_pod_routing, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
