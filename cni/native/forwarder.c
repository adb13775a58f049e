/*
 * ambit-cni, the fast path: the executable a container runtime runs for every CNI call. It forwards the whole call
 * (the CNI_* environment and the network config on stdin) to the node agent over its unix socket in one request,
 * POST /v1/cni-call (shared/cni-protocol.ts), prints the agent's answer and exits with the agent's exit code. The
 * agent runs the plugin's own decision code (cni/plugin.ts) in-process, so this file makes no CNI decision at all.
 *
 * When the agent cannot answer (socket missing, refused, timeout, an answer that is not a complete 200, an agent
 * that died mid-request), it execs the Node plugin `ambit-cni-node` found beside it (or beside the file a symlink
 * to it points at) with the same environment and the same stdin: the slow path, which decides exactly as before
 * (an enrolled pod fails closed, a pod that is not enrolled passes through).
 *
 * Owns: bounded reading of stdin, one HTTP/1.1 exchange with deadlines, finding and exec'ing the slow path.
 * Must not know about: CNI commands, configs, results or enrollment (cni/plugin.ts decides all of that).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A network config is a few KiB; GC lists every attachment on the node (about 100 bytes each). */
#define MAX_STDIN_BYTES (4 * 1024 * 1024)
/* The agent's answer is a CNI result (a few KiB at most). */
#define MAX_REPLY_BYTES (1024 * 1024)
/*
 * How long the agent gets to answer before the slow path gets its turn. An agent that accepted the call but says
 * nothing is frozen or overloaded; the Node plugin then decides with its own deadlines (an enrolled pod fails
 * closed after 10 s, DEL gives up after 2 s), so these are short enough that both together stay near the Node
 * plugin's own bound, and long enough for a busy node (a capture takes the agent a few hundred ms; GC up to 5 s).
 */
#define REPLY_TIMEOUT_ADD_MS 4000
#define REPLY_TIMEOUT_GC_MS 6000
#define REPLY_TIMEOUT_OTHER_MS 2500
#define CONNECT_TIMEOUT_MS 1000
#define MAX_ENV_BYTES (256 * 1024)
#define DEFAULT_AGENT_SOCKET "/var/run/ambit/cni.sock"
#define SLOW_PATH_NAME "ambit-cni-node"
#define CALL_PATH "/v1/cni-call"
#define EXIT_HEADER "ambit-cni-exit:"

extern char **environ;

static const char *self_path;
static int reply_timeout_ms = REPLY_TIMEOUT_OTHER_MS;

/* A CNI error result on stdout (the runtime shows it) and exit 1: for failures where no plugin could run at all. */
static void fail(const char *message) {
  printf("{\"cniVersion\":\"1.0.0\",\"code\":5,\"msg\":\"ambit-cni: %s\"}\n", message);
  fflush(stdout);
  exit(1);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Reads all of fd 0 into *out; returns its length, or -1 when it is over MAX_STDIN_BYTES or unreadable. */
static long read_stdin(char **out) {
  size_t cap = 16 * 1024, len = 0;
  char *buf = malloc(cap);
  if (buf == NULL) return -1;
  for (;;) {
    if (len == cap) {
      if (cap >= MAX_STDIN_BYTES) { free(buf); return -1; }
      cap *= 2;
      char *grown = realloc(buf, cap);
      if (grown == NULL) { free(buf); return -1; }
      buf = grown;
    }
    ssize_t n = read(0, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { free(buf); return -1; }
    if (n == 0) break;
    len += (size_t)n;
  }
  *out = buf;
  return (long)len;
}

/*
 * The config's top-level "agentSocket" as written (a plain string without escapes), else the default. Only a hint
 * of where to connect: the agent parses the config itself and answers 421 if it is not the agent the config names.
 */
static void agent_socket(const char *config, size_t len, char *out, size_t out_size) {
  static const char key[] = "\"agentSocket\"";
  const char *end = config + len;
  const char *at = memmem(config, len, key, sizeof key - 1);
  snprintf(out, out_size, "%s", DEFAULT_AGENT_SOCKET);
  if (at == NULL) return;
  const char *p = at + sizeof key - 1;
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  if (p == end || *p != ':') return;
  p++;
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  if (p == end || *p != '"') return;
  const char *start = ++p;
  while (p < end && *p != '"' && *p != '\\') p++;
  if (p == end || *p != '"' || (size_t)(p - start) >= out_size) { out[0] = '\0'; return; }
  memcpy(out, start, (size_t)(p - start));
  out[p - start] = '\0';
}

/* Waits until fd is ready for `events` or the deadline passes; 0 when ready, -1 on timeout (errno ETIMEDOUT). */
static int wait_fd(int fd, short events, long deadline) {
  for (;;) {
    long left = deadline - now_ms();
    if (left <= 0) { errno = ETIMEDOUT; return -1; }
    struct pollfd pfd = { .fd = fd, .events = events };
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) { errno = ETIMEDOUT; return -1; }
    return 0;
  }
}

static int write_all(int fd, struct iovec *iov, int count, long deadline) {
  while (count > 0) {
    ssize_t n = writev(fd, iov, count);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (wait_fd(fd, POLLOUT, deadline) < 0) return -1;
      continue;
    }
    if (n < 0) return -1;
    while (count > 0 && (size_t)n >= iov->iov_len) { n -= (ssize_t)iov->iov_len; iov++; count--; }
    if (count > 0) { iov->iov_base = (char *)iov->iov_base + n; iov->iov_len -= (size_t)n; }
  }
  return 0;
}

/* The CNI_* variables as NAME=VALUE entries, each ended by NUL, the list ended by an empty entry. */
static size_t environment_block(char *out, size_t size) {
  size_t len = 0;
  for (char **e = environ; *e != NULL; e++) {
    if (strncmp(*e, "CNI_", 4) != 0) continue;
    size_t n = strlen(*e) + 1;
    if (len + n + 1 > size) fail("the CNI_* environment is over 256 KiB");
    memcpy(out + len, *e, n);
    len += n;
  }
  out[len++] = '\0';
  return len;
}

/* Case-insensitive search for a header name at the start of a line within the head. */
static const char *find_header(const char *head, size_t len, const char *name) {
  size_t n = strlen(name);
  for (const char *p = head; p + n <= head + len; p++) {
    if ((p == head || p[-1] == '\n') && strncasecmp(p, name, n) == 0) return p + n;
  }
  return NULL;
}

/*
 * One exchange with the agent. On a complete 200 answer, prints it and exits with its code; otherwise returns with
 * `why` saying what went wrong, for the slow path's stderr note.
 */
static void forward(const char *socket_path, const char *config, size_t config_len, char *why, size_t why_size) {
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (socket_path[0] == '\0' || strlen(socket_path) >= sizeof addr.sun_path) {
    snprintf(why, why_size, "agentSocket is not a usable unix socket path");
    return;
  }
  memcpy(addr.sun_path, socket_path, strlen(socket_path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { snprintf(why, why_size, "socket: %s", strerror(errno)); return; }
  long deadline = now_ms() + CONNECT_TIMEOUT_MS;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int error = errno;
    if (error == EAGAIN || error == EINPROGRESS) {
      socklen_t size = sizeof error;
      if (wait_fd(fd, POLLOUT, deadline) < 0) error = errno;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) < 0) error = errno;
    }
    if (error != 0 && error != EAGAIN && error != EINPROGRESS) {
      snprintf(why, why_size, "connecting to %s: %s", socket_path, strerror(error));
      close(fd);
      return;
    }
  }

  static char env_block[MAX_ENV_BYTES];
  size_t env_len = environment_block(env_block, sizeof env_block);
  char head[256];
  int head_len = snprintf(head, sizeof head,
                          "POST " CALL_PATH " HTTP/1.1\r\nHost: ambit\r\nContent-Type: application/octet-stream\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n", env_len + config_len);
  struct iovec iov[3] = {
    { .iov_base = head, .iov_len = (size_t)head_len },
    { .iov_base = env_block, .iov_len = env_len },
    { .iov_base = (void *)config, .iov_len = config_len },
  };
  deadline = now_ms() + reply_timeout_ms;
  if (write_all(fd, iov, 3, deadline) < 0) {
    snprintf(why, why_size, "sending the call to %s: %s", socket_path, strerror(errno));
    close(fd);
    return;
  }

  char *reply = malloc(MAX_REPLY_BYTES);
  if (reply == NULL) fail("out of memory");
  size_t len = 0;
  for (;;) {
    if (len == MAX_REPLY_BYTES) { snprintf(why, why_size, "the agent's answer is over 1 MiB"); goto out; }
    ssize_t n = read(fd, reply + len, MAX_REPLY_BYTES - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (wait_fd(fd, POLLIN, deadline) < 0) {
        snprintf(why, why_size, "no answer from %s within %d ms", socket_path, reply_timeout_ms);
        goto out;
      }
      continue;
    }
    if (n < 0) { snprintf(why, why_size, "reading the answer: %s", strerror(errno)); goto out; }
    if (n == 0) break;
    len += (size_t)n;
  }
  const char *body = memmem(reply, len, "\r\n\r\n", 4);
  if (body == NULL) { snprintf(why, why_size, "the agent closed the connection before answering (%zu bytes)", len); goto out; }
  size_t head_size = (size_t)(body - reply);
  body += 4;
  int status = 0;
  if (sscanf(reply, "HTTP/1.%*1[01] %3d", &status) != 1 || status != 200) {
    snprintf(why, why_size, "the agent answered HTTP %d to " CALL_PATH, status);
    goto out;
  }
  const char *exit_value = find_header(reply, head_size, EXIT_HEADER);
  const char *length_value = find_header(reply, head_size, "content-length:");
  char *parse_end;
  long exit_code = exit_value == NULL ? -1 : strtol(exit_value, &parse_end, 10);
  unsigned long body_len = length_value == NULL ? ULONG_MAX : strtoul(length_value, &parse_end, 10);
  if (exit_code < 0 || exit_code > 255 || body_len != len - head_size - 4) {
    snprintf(why, why_size, "the agent's answer is incomplete or has no exit code");
    goto out;
  }
  if (fwrite(body, 1, body_len, stdout) != body_len || fflush(stdout) != 0) exit(1);
  exit((int)exit_code);
out:
  free(reply);
  close(fd);
}

/* The slow path: ambit-cni-node beside the path we were run as, following symlinks one step at a time. */
static int find_slow_path(char *out, size_t size) {
  char current[PATH_MAX];
  if (strchr(self_path, '/') != NULL) snprintf(current, sizeof current, "%s", self_path);
  else if (readlink("/proc/self/exe", current, sizeof current - 1) < 0) return -1;
  else current[sizeof current - 1] = '\0';
  for (int hops = 0; hops < 16; hops++) {
    const char *slash = strrchr(current, '/');
    int dir_len = slash == NULL ? 0 : (int)(slash - current);
    snprintf(out, size, "%.*s/" SLOW_PATH_NAME, dir_len, current);
    if (access(out, X_OK) == 0) return 0;
    char target[PATH_MAX];
    ssize_t n = readlink(current, target, sizeof target - 1);
    if (n < 0) break;
    target[n] = '\0';
    if (target[0] == '/') snprintf(current, sizeof current, "%s", target);
    else {
      /* A relative link: its target is relative to the link's directory (kept, so dir_len bytes stay). */
      size_t target_len = (size_t)n;
      if ((size_t)dir_len + 1 + target_len >= sizeof current) break;
      current[dir_len] = '/';
      memcpy(current + dir_len + 1, target, target_len + 1);
    }
  }
  /* Installed by copying: the real file is where /proc/self/exe says. */
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0) return -1;
  exe[n] = '\0';
  const char *slash = strrchr(exe, '/');
  snprintf(out, size, "%.*s/" SLOW_PATH_NAME, slash == NULL ? 0 : (int)(slash - exe), exe);
  return access(out, X_OK);
}

static void run_slow_path(const char *config, size_t config_len, int stdin_read, const char *why) {
  char slow[PATH_MAX];
  if (find_slow_path(slow, sizeof slow) < 0) {
    fprintf(stderr, "ambit-cni: %s; and the Node plugin " SLOW_PATH_NAME " is not beside %s\n", why, self_path);
    fail("the node agent did not answer and the Node plugin ambit-cni-node is not beside this executable: install the "
         "plugin with the installer (node cni/install.ts --bin-dir DIR --conf-dir DIR ...), or symlink cni/ambit-cni itself");
  }
  fprintf(stderr, "ambit-cni: %s: running the Node plugin %s\n", why, slow);
  if (stdin_read) {
    /* The Node plugin reads the same config from its stdin: a memory file holding what we read. */
    int memory = memfd_create("ambit-cni-config", 0);
    if (memory < 0) fail("cannot hand the config to the Node plugin (memfd_create failed)");
    size_t done = 0;
    while (done < config_len) {
      ssize_t n = write(memory, config + done, config_len - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("cannot hand the config to the Node plugin (write failed)");
      done += (size_t)n;
    }
    if (lseek(memory, 0, SEEK_SET) < 0 || dup2(memory, 0) < 0) fail("cannot hand the config to the Node plugin");
    close(memory);
  }
  char *argv[] = { slow, NULL };
  execv(slow, argv);
  fprintf(stderr, "ambit-cni: exec %s: %s\n", slow, strerror(errno));
  fail("cannot run the Node plugin ambit-cni-node");
}

int main(int argc, char **argv) {
  (void)argc;
  self_path = argv[0] != NULL ? argv[0] : "ambit-cni";
  const char *command = getenv("CNI_COMMAND");
  if (command != NULL && strcmp(command, "ADD") == 0) reply_timeout_ms = REPLY_TIMEOUT_ADD_MS;
  if (command != NULL && strcmp(command, "GC") == 0) reply_timeout_ms = REPLY_TIMEOUT_GC_MS;
  /* VERSION may come with no stdin at all (or a terminal); it needs none (as cni/main.ts). */
  int stdin_read = !(command != NULL && strcmp(command, "VERSION") == 0) && !isatty(0);
  char *config = NULL;
  long config_len = 0;
  if (stdin_read) {
    config_len = read_stdin(&config);
    if (config_len < 0) fail("the network config on stdin is over 4 MiB or unreadable");
  }
  char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  agent_socket(config == NULL ? "" : config, (size_t)config_len, socket_path, sizeof socket_path);
  char why[512];
  forward(socket_path, config == NULL ? "" : config, (size_t)config_len, why, sizeof why);
  run_slow_path(config == NULL ? "" : config, (size_t)config_len, stdin_read, why);
  return 1;
}
