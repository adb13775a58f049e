/*
 * ambit_sockets: the socket operations Node.js cannot do by itself.
 *
 * Owns: creating TCP and UDP sockets inside another network namespace (setns is per
 * thread: enter, create, return), and the socket options the mesh needs
 * (SO_MARK, SO_REUSEPORT, IP_TRANSPARENT, SO_ORIGINAL_DST for IPv4 and IPv6).
 * Every failure becomes a JS Error with `code` (errno name), `errno` and
 * `syscall`, so callers branch on code.
 *
 * Must not know about: pods, policy, HBONE. It hands back plain file
 * descriptors that Node wraps with net.Server.listen({ fd }) or
 * new net.Socket({ fd }).
 */
#define _GNU_SOURCE
#include "napi-errors.h"
#include "netns-visit.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/nsfs.h>
#include <linux/netfilter_ipv4.h>

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* Reads an optional property; returns 1 when present and not undefined/null. */
static int get_prop(napi_env env, napi_value obj, const char *name, napi_value *out) {
  bool has = false;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, obj, name, out) != napi_ok) return 0;
  napi_valuetype type;
  napi_typeof(env, *out, &type);
  return type != napi_undefined && type != napi_null;
}

static int get_int_prop(napi_env env, napi_value obj, const char *name, int64_t *out) {
  napi_value v;
  if (!get_prop(env, obj, name, &v)) return 0;
  return napi_get_value_int64(env, v, out) == napi_ok;
}

static int get_bool_prop(napi_env env, napi_value obj, const char *name) {
  napi_value v;
  bool b = false;
  if (!get_prop(env, obj, name, &v)) return 0;
  napi_get_value_bool(env, v, &b);
  return b;
}

/* Copies a string property into buf; returns 1 when present. */
static int get_string_prop(napi_env env, napi_value obj, const char *name, char *buf, size_t len) {
  napi_value v;
  size_t written = 0;
  if (!get_prop(env, obj, name, &v)) return 0;
  if (napi_get_value_string_utf8(env, v, buf, len, &written) != napi_ok) return 0;
  (void)written;
  return 1;
}

typedef struct {
  int family;
  struct sockaddr_storage addr;
  socklen_t addr_len;
} parsed_addr;

static int parse_addr(const char *host, int port, parsed_addr *out) {
  memset(out, 0, sizeof *out);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&out->addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->addr;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    out->family = AF_INET;
    out->addr_len = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    out->family = AF_INET6;
    out->addr_len = sizeof *v6;
    return 0;
  }
  return -1;
}

/*
 * Creates a socket of `family` and `type` (SOCK_STREAM, SOCK_DGRAM) in another namespace (netns-visit.h: the
 * calling thread always returns to its own namespace, or the process aborts rather than run on in the wrong one).
 * `netns_fd` >= 0: a descriptor of the namespace the caller keeps open (a captured pod's, opened once by its socket
 * factory with openNetns and closed when the pod is released): no open and close of the path per socket. Otherwise
 * `netns_path` is opened for this one socket (NULL or empty: the current namespace, no setns at all).
 */
static int socket_in_netns(const char *netns_path, int netns_fd, int family, int type, int *err, const char **syscall) {
  if (netns_fd < 0 && (netns_path == NULL || netns_path[0] == '\0')) {
    int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { *err = errno; *syscall = "socket"; }
    return fd;
  }
  int opened = -1;
  if (netns_fd >= 0) {
    if (netns_visit_enter_fd(netns_fd, err, syscall) != 0) return -1;
  } else if ((opened = netns_visit_enter(netns_path, err, syscall)) < 0) {
    return -1;
  }
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int socket_errno = errno;
  netns_visit_leave(opened, "ambit_sockets");
  if (fd < 0) { *err = socket_errno; *syscall = "socket"; }
  return fd;
}

/* opts.netnsFd when present (a namespace descriptor the caller holds), else -1. */
static int get_netns_fd(napi_env env, napi_value opts) {
  int64_t fd = -1;
  if (!get_int_prop(env, opts, "netnsFd", &fd) || fd < 0 || fd > 0x7fffffff) return -1;
  return (int)fd;
}

static int set_int_opt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

/*
 * The socket options the addon sets on the sockets it makes, one row each: the options object's property that asks
 * for it, the level and name per family, and the syscall named when the kernel refuses it. Read once per call
 * (read_options), set on each socket by one helper (apply_options): a new option is a row, not another block of the
 * same shape.
 */
enum {
  OPTION_MARK,
  OPTION_TRANSPARENT,
  OPTION_REUSE_PORT,
  OPTION_REUSE_ADDRESS,
  OPTION_IPV6_ONLY,
  OPTION_NO_DELAY,
  OPTION_BIND_NO_PORT,
  OPTION_COUNT
};

typedef struct {
  const char *property;
  int level, name;    /* IPv4 sockets (and both families when the option is not per family) */
  int level6, name6;  /* IPv6 sockets */
  int ipv6_only;      /* meaningful on IPv6 sockets only: skipped on IPv4 ones */
  int valued;         /* the property's integer is the value (0: not set); otherwise a flag, set to 1 when true */
  const char *syscall;
} socket_option;

static const socket_option SOCKET_OPTIONS[OPTION_COUNT] = {
  [OPTION_MARK] = {"mark", SOL_SOCKET, SO_MARK, SOL_SOCKET, SO_MARK, 0, 1, "setsockopt(SO_MARK)"},
  [OPTION_TRANSPARENT] = {"transparent", SOL_IP, IP_TRANSPARENT, SOL_IPV6, IPV6_TRANSPARENT, 0, 0, "setsockopt(IP_TRANSPARENT)"},
  [OPTION_REUSE_PORT] = {"reusePort", SOL_SOCKET, SO_REUSEPORT, SOL_SOCKET, SO_REUSEPORT, 0, 0, "setsockopt(SO_REUSEPORT)"},
  [OPTION_REUSE_ADDRESS] = {"reuseAddress", SOL_SOCKET, SO_REUSEADDR, SOL_SOCKET, SO_REUSEADDR, 0, 0, "setsockopt(SO_REUSEADDR)"},
  [OPTION_IPV6_ONLY] = {"ipv6Only", IPPROTO_IPV6, IPV6_V6ONLY, IPPROTO_IPV6, IPV6_V6ONLY, 1, 0, "setsockopt(IPV6_V6ONLY)"},
  [OPTION_NO_DELAY] = {"noDelay", IPPROTO_TCP, TCP_NODELAY, IPPROTO_TCP, TCP_NODELAY, 0, 0, "setsockopt(TCP_NODELAY)"},
  /* SOL_IP for both families, as Linux takes it on an IPv6 TCP socket too. */
  [OPTION_BIND_NO_PORT] = {"bindNoPort", SOL_IP, IP_BIND_ADDRESS_NO_PORT, SOL_IP, IP_BIND_ADDRESS_NO_PORT, 0, 0, "setsockopt(IP_BIND_ADDRESS_NO_PORT)"},
};

/* The value to set per option (0: leave it alone), as read from one options object. */
typedef struct {
  int value[OPTION_COUNT];
} option_values;

/* Reads the options in `wanted` (a bit per OPTION_*) from `opts`. */
static void read_options(napi_env env, napi_value opts, unsigned wanted, option_values *out) {
  for (int option = 0; option < OPTION_COUNT; option++) {
    out->value[option] = 0;
    if (!(wanted & (1u << option))) continue;
    const socket_option *row = &SOCKET_OPTIONS[option];
    if (row->valued) {
      int64_t value = 0;
      if (get_int_prop(env, opts, row->property, &value)) out->value[option] = (int)value;
    } else {
      out->value[option] = get_bool_prop(env, opts, row->property);
    }
  }
}

/* Sets every option with a value on `fd`, in the table's order. Returns 0, or -1 with errno and *failed set. */
static int apply_options(int fd, int family, const option_values *values, const char **failed) {
  for (int option = 0; option < OPTION_COUNT; option++) {
    int value = values->value[option];
    if (value == 0) continue;
    const socket_option *row = &SOCKET_OPTIONS[option];
    if (row->ipv6_only && family != AF_INET6) continue;
    int level = family == AF_INET6 ? row->level6 : row->level;
    int name = family == AF_INET6 ? row->name6 : row->name;
    if (set_int_opt(fd, level, name, value) != 0) { *failed = row->syscall; return -1; }
  }
  return 0;
}

/* The options listen and connect sockets read from their options object (bindNoPort is set by socketTcp itself, for a bind to port 0). */
#define COMMON_OPTIONS ((1u << OPTION_MARK) | (1u << OPTION_TRANSPARENT) | (1u << OPTION_REUSE_PORT) | (1u << OPTION_REUSE_ADDRESS) | (1u << OPTION_IPV6_ONLY) | (1u << OPTION_NO_DELAY))

/* Options shared by listen and connect sockets. Returns 0 or -1 with errno. */
static int apply_common_options(napi_env env, napi_value opts, int fd, int family, const char **failed) {
  option_values values;
  read_options(env, opts, COMMON_OPTIONS, &values);
  return apply_options(fd, family, &values, failed);
}

/*
 * A socket of `type` made in opts.netns with the common options and bound to opts.host:opts.port: what listenTcp
 * and bindUdp share. Returns the fd, or -1 with a JS exception pending (messages name `caller`).
 */
static int bound_socket_in_netns(napi_env env, napi_value opts, int type, const char *caller) {
  char netns[4096] = "", host[64] = "", message[128];
  int64_t port = 0;
  get_string_prop(env, opts, "netns", netns, sizeof netns);
  if (!get_string_prop(env, opts, "host", host, sizeof host)) {
    snprintf(message, sizeof message, "%s needs host (an IP address literal)", caller);
    napi_throw_type_error(env, "EINVAL", message);
    return -1;
  }
  if (!get_int_prop(env, opts, "port", &port) || port < 0 || port > 65535) {
    snprintf(message, sizeof message, "%s needs port 0-65535", caller);
    napi_throw_range_error(env, "EINVAL", message);
    return -1;
  }
  parsed_addr addr;
  if (parse_addr(host, (int)port, &addr) != 0) {
    snprintf(message, sizeof message, "%s host must be an IPv4 or IPv6 address literal", caller);
    napi_throw_type_error(env, "EINVAL", message);
    return -1;
  }
  int err = 0;
  const char *syscall = NULL;
  int fd = socket_in_netns(netns, get_netns_fd(env, opts), addr.family, type, &err, &syscall);
  if (fd < 0) { throw_errno(env, err, syscall, netns[0] ? netns : NULL); return -1; }
  const char *failed = NULL;
  if (apply_common_options(env, opts, fd, addr.family, &failed) != 0) {
    err = errno; close(fd);
    throw_errno(env, err, failed, NULL);
    return -1;
  }
  if (bind(fd, (struct sockaddr *)&addr.addr, addr.addr_len) != 0) {
    err = errno; close(fd);
    char detail[96];
    snprintf(detail, sizeof detail, "%s:%d", host, (int)port);
    throw_errno(env, err, "bind", detail);
    return -1;
  }
  return fd;
}

/*
 * listenTcp({ netns?, host, port, backlog?, mark?, reusePort?, transparent?,
 *             reuseAddress?, ipv6Only? }) -> fd of a listening socket.
 */
static napi_value listen_tcp(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value opts;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, &opts, NULL, NULL));
  if (argc < 1) { napi_throw_type_error(env, "EINVAL", "listenTcp needs an options object"); return NULL; }
  int64_t backlog = 511;
  get_int_prop(env, opts, "backlog", &backlog);
  int fd = bound_socket_in_netns(env, opts, SOCK_STREAM, "listenTcp");
  if (fd < 0) return NULL;
  if (listen(fd, (int)backlog) != 0) {
    int err = errno; close(fd);
    return throw_errno(env, err, "listen", NULL);
  }
  napi_value result;
  CHECK_NAPI(env, napi_create_int32(env, fd, &result));
  return result;
}

/*
 * socketTcp({ netns?, family: 4|6, mark?, transparent?, bindHost?, bindPort?,
 *             noDelay? }) -> fd of an unconnected socket, to be connected by
 * Node (new net.Socket({ fd }).connect(...)).
 */
static napi_value socket_tcp(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value opts;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, &opts, NULL, NULL));
  if (argc < 1) { napi_throw_type_error(env, "EINVAL", "socketTcp needs an options object"); return NULL; }
  char netns[4096] = "", bind_host[64] = "";
  int64_t family = 4, bind_port = 0;
  get_string_prop(env, opts, "netns", netns, sizeof netns);
  get_int_prop(env, opts, "family", &family);
  int af = family == 6 ? AF_INET6 : AF_INET;
  int err = 0;
  const char *syscall = NULL;
  int fd = socket_in_netns(netns, get_netns_fd(env, opts), af, SOCK_STREAM, &err, &syscall);
  if (fd < 0) return throw_errno(env, err, syscall, netns[0] ? netns : NULL);
  const char *failed = NULL;
  if (apply_common_options(env, opts, fd, af, &failed) != 0) {
    err = errno; close(fd);
    return throw_errno(env, err, failed, NULL);
  }
  if (get_string_prop(env, opts, "bindHost", bind_host, sizeof bind_host)) {
    get_int_prop(env, opts, "bindPort", &bind_port);
    parsed_addr addr;
    if (parse_addr(bind_host, (int)bind_port, &addr) != 0 || addr.family != af) {
      close(fd);
      napi_throw_type_error(env, "EINVAL", "socketTcp bindHost must be an address of the socket's family");
      return NULL;
    }
    /*
     * Port 0: the port is chosen at connect() (IP_BIND_ADDRESS_NO_PORT), from the whole 4-tuple, as for a socket
     * that was never bound. bind() itself would pick a port no socket bound to this address holds, TIME-WAIT
     * ones included: a search over the bind table on every connection, and EADDRINUSE once a storm's TIME-WAITs
     * hold the range, although the same port to another destination would do. (Delivering with the client's
     * address, as ztunnel does, binds every connection to the app this way.)
     */
    if (bind_port == 0) {
      option_values no_port = {{0}};
      no_port.value[OPTION_BIND_NO_PORT] = 1;
      if (apply_options(fd, af, &no_port, &failed) != 0) {
        err = errno; close(fd);
        return throw_errno(env, err, failed, NULL);
      }
    }
    if (bind(fd, (struct sockaddr *)&addr.addr, addr.addr_len) != 0) {
      err = errno; close(fd);
      return throw_errno(env, err, "bind", bind_host);
    }
  }
  napi_value result;
  CHECK_NAPI(env, napi_create_int32(env, fd, &result));
  return result;
}

/*
 * bindUdp({ netns?, host, port, mark?, reusePort?, ipv6Only? }) -> fd of a
 * bound UDP socket, to be wrapped by Node (dgram's bind({ fd })). Port 0 picks
 * an ephemeral port (the DNS forwarder's upstream socket).
 */
static napi_value bind_udp(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value opts;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, &opts, NULL, NULL));
  if (argc < 1) { napi_throw_type_error(env, "EINVAL", "bindUdp needs an options object"); return NULL; }
  int fd = bound_socket_in_netns(env, opts, SOCK_DGRAM, "bindUdp");
  if (fd < 0) return NULL;
  napi_value result;
  CHECK_NAPI(env, napi_create_int32(env, fd, &result));
  return result;
}

static int get_fd_arg(napi_env env, napi_callback_info info, napi_value *args, size_t want, int32_t *fd) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, "EINVAL", "missing arguments");
    return -1;
  }
  if (napi_get_value_int32(env, args[0], fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, "EINVAL", "first argument must be a file descriptor");
    return -1;
  }
  return 0;
}

/*
 * originalDst(fd, family?) -> { address, port, family } from conntrack's NAT record. `family` (4 or 6) is the
 * accepted socket's own, which its listener's address already says; without it a getsockname asks the kernel.
 */
static napi_value original_dst(napi_env env, napi_callback_info info) {
  napi_value args[2];
  size_t argc = 2;
  int32_t fd, family_hint = 0;
  if (napi_get_cb_info(env, info, &argc, args, NULL, NULL) != napi_ok || argc < 1
      || napi_get_value_int32(env, args[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "first argument must be a file descriptor");
    return NULL;
  }
  if (argc >= 2 && napi_get_value_int32(env, args[1], &family_hint) != napi_ok) family_hint = 0;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  int local_family;
  if (family_hint == 4 || family_hint == 6) {
    local_family = family_hint == 6 ? AF_INET6 : AF_INET;
  } else {
    struct sockaddr_storage local;
    socklen_t local_len = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0) return throw_errno(env, errno, "getsockname", NULL);
    local_family = local.ss_family;
  }
  int rc;
  if (local_family == AF_INET6) {
    rc = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len);
  } else {
    rc = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  }
  if (rc != 0) return throw_errno(env, errno, "getsockopt(SO_ORIGINAL_DST)", NULL);
  char text[INET6_ADDRSTRLEN];
  int port;
  int family;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    port = ntohs(v6->sin6_port);
    family = 6;
  } else {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    port = ntohs(v4->sin_port);
    family = 4;
  }
  napi_value result, address, port_value, family_value;
  CHECK_NAPI(env, napi_create_object(env, &result));
  CHECK_NAPI(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &address));
  CHECK_NAPI(env, napi_create_int32(env, port, &port_value));
  CHECK_NAPI(env, napi_create_int32(env, family, &family_value));
  napi_set_named_property(env, result, "address", address);
  napi_set_named_property(env, result, "port", port_value);
  napi_set_named_property(env, result, "family", family_value);
  return result;
}

/*
 * The options read or set on an existing socket (setMark, getMark, tcpNoDelay): one row each, handed to the one
 * getter or setter below as the function's data, so each is a row, not a function of the same shape.
 */
typedef enum { OPTION_AS_UINT32, OPTION_AS_BOOLEAN } option_type;

typedef struct {
  int level, name;
  option_type type;
  const char *syscall;
} fd_option;

static const fd_option SET_MARK = {SOL_SOCKET, SO_MARK, OPTION_AS_UINT32, "setsockopt(SO_MARK)"};
static const fd_option GET_MARK = {SOL_SOCKET, SO_MARK, OPTION_AS_UINT32, "getsockopt(SO_MARK)"};
static const fd_option GET_TCP_NO_DELAY = {IPPROTO_TCP, TCP_NODELAY, OPTION_AS_BOOLEAN, "getsockopt(TCP_NODELAY)"};

/* (fd) -> the option's value as its row's type: getMark(fd) -> number, tcpNoDelay(fd) -> boolean. */
static napi_value get_fd_option(napi_env env, napi_callback_info info) {
  napi_value args[1];
  size_t argc = 1;
  void *data = NULL;
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, args, NULL, &data) != napi_ok || argc < 1
      || napi_get_value_int32(env, args[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "first argument must be a file descriptor");
    return NULL;
  }
  const fd_option *row = (const fd_option *)data;
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, row->level, row->name, &value, &len) != 0) return throw_errno(env, errno, row->syscall, NULL);
  napi_value result;
  if (row->type == OPTION_AS_BOOLEAN) CHECK_NAPI(env, napi_get_boolean(env, value != 0, &result));
  else CHECK_NAPI(env, napi_create_uint32(env, (uint32_t)value, &result));
  return result;
}

/* (fd, value) sets the option: setMark(fd, mark). */
static napi_value set_fd_option(napi_env env, napi_callback_info info) {
  napi_value args[2];
  void *data = NULL;
  int32_t fd;
  uint32_t value;
  size_t argc = 2;
  if (napi_get_cb_info(env, info, &argc, args, NULL, &data) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "EINVAL", "missing arguments");
    return NULL;
  }
  if (napi_get_value_int32(env, args[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "first argument must be a file descriptor");
    return NULL;
  }
  const fd_option *row = (const fd_option *)data;
  bool flag = false;
  if (row->type == OPTION_AS_BOOLEAN ? napi_get_value_bool(env, args[1], &flag) != napi_ok : napi_get_value_uint32(env, args[1], &value) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", row->type == OPTION_AS_BOOLEAN ? "the value must be a boolean" : "the value must be a number");
    return NULL;
  }
  if (row->type == OPTION_AS_BOOLEAN) value = flag ? 1 : 0;
  if (set_int_opt(fd, row->level, row->name, (int)value) != 0) return throw_errno(env, errno, row->syscall, NULL);
  return NULL;
}

/*
 * openNetns(path) -> a descriptor of the network namespace at `path`, for socketTcp/listenTcp/bindUdp's `netnsFd`:
 * a captured pod's socket factory holds one for the pod's life (closeFd when the pod is released), so a socket made
 * in the pod costs two setns and no open and close of the path. Refuses a file that is not a network namespace.
 */
static napi_value open_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  char path[4096];
  size_t written = 0;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, &arg, NULL, NULL));
  if (argc < 1 || napi_get_value_string_utf8(env, arg, path, sizeof path, &written) != napi_ok || written == 0) {
    napi_throw_type_error(env, "EINVAL", "openNetns needs a namespace path");
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  int type = ioctl(fd, NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    int err = type < 0 ? errno : EINVAL;
    close(fd);
    return throw_errno(env, err, "ioctl(NS_GET_NSTYPE)", path);
  }
  napi_value result;
  CHECK_NAPI(env, napi_create_int32(env, fd, &result));
  return result;
}

/* closeFd(fd): for descriptors that never reached Node. */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value args[1];
  int32_t fd;
  if (get_fd_arg(env, info, args, 1, &fd) != 0) return NULL;
  if (close(fd) != 0) return throw_errno(env, errno, "close", NULL);
  return NULL;
}

/* currentNetnsInode() -> inode of this thread's network namespace (for tests). */
static napi_value current_netns_inode(napi_env env, napi_callback_info info) {
  (void)info;
  char link[64];
  ssize_t n = readlink("/proc/thread-self/ns/net", link, sizeof link - 1);
  if (n < 0) return throw_errno(env, errno, "readlink", "/proc/thread-self/ns/net");
  link[n] = '\0';
  napi_value result;
  CHECK_NAPI(env, napi_create_string_utf8(env, link, NAPI_AUTO_LENGTH, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"listenTcp", NULL, listen_tcp, NULL, NULL, NULL, napi_default, NULL},
    {"socketTcp", NULL, socket_tcp, NULL, NULL, NULL, napi_default, NULL},
    {"bindUdp", NULL, bind_udp, NULL, NULL, NULL, napi_default, NULL},
    {"originalDst", NULL, original_dst, NULL, NULL, NULL, napi_default, NULL},
    {"setMark", NULL, set_fd_option, NULL, NULL, NULL, napi_default, (void *)&SET_MARK},
    {"getMark", NULL, get_fd_option, NULL, NULL, NULL, napi_default, (void *)&GET_MARK},
    {"tcpNoDelay", NULL, get_fd_option, NULL, NULL, NULL, napi_default, (void *)&GET_TCP_NO_DELAY},
    {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_default, NULL},
    {"openNetns", NULL, open_netns, NULL, NULL, NULL, napi_default, NULL},
    {"currentNetns", NULL, current_netns_inode, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
