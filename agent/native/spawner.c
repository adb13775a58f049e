/*
 * ambit-spawner: starts short-lived commands for a Node.js process, so the Node process never forks itself.
 *
 * libuv's spawn forks the whole Node process on the calling thread and waits there for the exec: 20-45 ms of a
 * busy supervisor's main thread per command. This small process is started once; it reads requests on stdin, starts
 * each command with vfork+execve (the child enters a network namespace with setns first when asked), feeds it its
 * stdin bytes, collects its exit status, stdout and stderr (each bounded), and writes one answer per request on
 * stdout. Many requests are in flight at once; answers come back in completion order, matched by request id.
 *
 * Wire format (host byte order; a "field" is a u32 length then that many bytes):
 *   request:  u32 length-of-rest, u32 id, u32 timeout_ms (0: none), u32 max_output (per stream; 0: default),
 *             field netns path ("" for none), field cwd ("" for ours), u32 argc, argc fields, u32 envc, envc fields
 *             ("NAME=value"), field stdin bytes
 *   answer:   u32 length-of-rest, u32 id, u32 kind, i32 value, u32 flags, field stdout, field stderr, field detail
 *             kind 0: exited, value = exit code; kind 1: killed, value = signal number;
 *             kind 2: could not start, value = errno, detail = the failing step ("spawn", "setns", "chdir", ...);
 *             kind 3: bad request, detail says why (the request is skipped, the spawner carries on)
 *             flags: 1 timed out (the child's process group got SIGKILL), 2 stdout truncated, 4 stderr truncated
 *
 * Safety: every read is bounded (requests, outputs); a malformed request gets a kind-3 answer and nothing else
 * happens; the spawner dies with its parent (PR_SET_PDEATHSIG, and stdin EOF), and so do its children (each gets
 * PR_SET_PDEATHSIG too, in its own process group, SIGKILLed when the spawner exits); every child is reaped.
 *
 * Owns: starting, feeding, timing out and reaping commands; the wire format above.
 * Must not know about: CNI, pods, namespaces' names or what any command does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Commands in flight at once; further requests wait in the pipe until one finishes (backpressure, not an error). */
#define MAX_CHILDREN 128
/* A request holds argv, env and stdin: a CNI config with a prevResult is a few KiB, an iptables-restore input more. */
#define MAX_REQUEST_BYTES (16 * 1024 * 1024)
/* Per stream when the request says 0: CNI results and `ip` output are far below this. */
#define DEFAULT_MAX_OUTPUT (4 * 1024 * 1024)
#define MAX_ARGS 4096
#define ANSWER_EXITED 0
#define ANSWER_KILLED 1
#define ANSWER_SPAWN_FAILED 2
#define ANSWER_BAD_REQUEST 3
#define FLAG_TIMED_OUT 1
#define FLAG_STDOUT_TRUNCATED 2
#define FLAG_STDERR_TRUNCATED 4

struct output {
  int fd;
  char *data;
  uint32_t len;
  uint32_t cap;
  int truncated;
};

struct child {
  int used;
  pid_t pid;
  uint32_t id;
  int reaped;
  int status;
  int timed_out;
  int64_t deadline_ms; /* 0: none */
  int stdin_fd;
  char *input;
  uint32_t input_len;
  uint32_t input_off;
  uint32_t max_output;
  struct output out[2];
};

static struct child children[MAX_CHILDREN];
static int children_in_use;

/* Request bytes read from stdin and not yet started. */
static char *in_buf;
static size_t in_len;
static size_t in_cap;
static uint64_t skip_bytes; /* what is left of an oversized request being discarded */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        poll(&p, 1, -1);
        continue;
      }
      _exit(0); /* the parent is gone: nobody to answer */
    }
    data += n;
    len -= (size_t)n;
  }
}

static void put_u32(char **p, uint32_t v) {
  memcpy(*p, &v, 4);
  *p += 4;
}

static void put_field(char **p, const char *data, uint32_t len) {
  put_u32(p, len);
  if (len > 0) memcpy(*p, data, len);
  *p += len;
}

static void answer(uint32_t id, uint32_t kind, int32_t value, uint32_t flags, const char *out, uint32_t out_len,
                   const char *err, uint32_t err_len, const char *detail) {
  uint32_t detail_len = (uint32_t)strlen(detail);
  size_t rest = 4 * 4 + 4 + (size_t)out_len + 4 + (size_t)err_len + 4 + detail_len;
  char *frame = malloc(4 + rest);
  if (frame == NULL) _exit(70);
  char *p = frame;
  put_u32(&p, (uint32_t)rest);
  put_u32(&p, id);
  put_u32(&p, kind);
  put_u32(&p, (uint32_t)value);
  put_u32(&p, flags);
  put_field(&p, out, out_len);
  put_field(&p, err, err_len);
  put_field(&p, detail, detail_len);
  write_all(STDOUT_FILENO, frame, 4 + rest);
  free(frame);
}

static void bad_request(uint32_t id, const char *why) {
  answer(id, ANSWER_BAD_REQUEST, 0, 0, "", 0, "", 0, why);
}

/* A bounded cursor over one request's bytes. */
struct cursor {
  const char *p;
  uint32_t left;
  int bad;
};

static uint32_t take_u32(struct cursor *c) {
  uint32_t v = 0;
  if (c->bad || c->left < 4) {
    c->bad = 1;
    return 0;
  }
  memcpy(&v, c->p, 4);
  c->p += 4;
  c->left -= 4;
  return v;
}

/* Returns a NUL-terminated copy of a field (NULL and c->bad on a short or embedded-NUL field when as_string). */
static char *take_field(struct cursor *c, uint32_t *len_out, int as_string) {
  uint32_t len = take_u32(c);
  if (c->bad || len > c->left) {
    c->bad = 1;
    return NULL;
  }
  if (as_string && memchr(c->p, '\0', len) != NULL) {
    c->bad = 1;
    return NULL;
  }
  char *copy = malloc((size_t)len + 1);
  if (copy == NULL) _exit(70);
  memcpy(copy, c->p, len);
  copy[len] = '\0';
  c->p += len;
  c->left -= len;
  if (len_out != NULL) *len_out = len;
  return copy;
}

static void free_strings(char **strings, uint32_t count) {
  if (strings == NULL) return;
  for (uint32_t i = 0; i < count; i++) free(strings[i]);
  free(strings);
}

static char **take_strings(struct cursor *c, uint32_t *count_out) {
  uint32_t count = take_u32(c);
  if (c->bad || count > MAX_ARGS || count > c->left / 4) {
    c->bad = 1;
    return NULL;
  }
  char **strings = calloc((size_t)count + 1, sizeof(char *));
  if (strings == NULL) _exit(70);
  for (uint32_t i = 0; i < count; i++) {
    strings[i] = take_field(c, NULL, 1);
    if (c->bad) {
      free_strings(strings, i);
      return NULL;
    }
  }
  *count_out = count;
  return strings;
}

/* execvp's lookup, but on the PATH of the request's environment (as libuv does), resolved before the vfork. */
static int resolve_command(const char *file, char **envp, char *resolved, size_t size) {
  if (strchr(file, '/') != NULL) {
    if (strlen(file) >= size) return ENAMETOOLONG;
    strcpy(resolved, file);
    return access(resolved, X_OK) == 0 ? 0 : errno;
  }
  const char *search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char **e = envp; *e != NULL; e++) {
    if (strncmp(*e, "PATH=", 5) == 0) {
      search = *e + 5;
      break;
    }
  }
  int error = ENOENT;
  const char *dir = search;
  for (;;) {
    const char *end = strchrnul(dir, ':');
    size_t dir_len = (size_t)(end - dir);
    if (dir_len == 0) dir = ".", dir_len = 1;
    if (dir_len + 1 + strlen(file) < size) {
      memcpy(resolved, dir, dir_len);
      resolved[dir_len] = '/';
      strcpy(resolved + dir_len + 1, file);
      if (access(resolved, X_OK) == 0) return 0;
      if (errno == EACCES) error = EACCES;
    }
    if (*end == '\0') break;
    dir = end + 1;
  }
  return error;
}

/* What the vfork child needs, and where it reports a failure (the memory is shared until it execs or exits). */
struct exec_plan {
  const char *path;
  char **argv;
  char **envp;
  const char *cwd;
  int netns_fd;
  int stdio[3];
  /* Both volatile themselves (not only what they point to): the child writes them only on paths that end in _exit,
   * so without it the compiler may assume a returning vfork left them as initialised (gcc -O2 did: the parent read a
   * NULL step after a failed setns and crashed on it). */
  volatile int failed_errno;
  const char *volatile failed_step;
};

static __attribute__((noinline)) void child_exec(struct exec_plan *plan) {
  sigset_t none;
  sigemptyset(&none);
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (plan->netns_fd >= 0 && setns(plan->netns_fd, CLONE_NEWNET) != 0) {
    plan->failed_step = "setns";
    plan->failed_errno = errno;
    _exit(127);
  }
  if (plan->cwd != NULL && chdir(plan->cwd) != 0) {
    plan->failed_step = "chdir";
    plan->failed_errno = errno;
    _exit(127);
  }
  for (int i = 0; i < 3; i++) {
    if (dup2(plan->stdio[i], i) < 0) {
      plan->failed_step = "dup2";
      plan->failed_errno = errno;
      _exit(127);
    }
  }
  execve(plan->path, plan->argv, plan->envp);
  plan->failed_step = "exec";
  plan->failed_errno = errno;
  _exit(127);
}

/* vfork kept in a function of its own: nothing of the caller's frame is live across it. */
static __attribute__((noinline)) pid_t spawn_child(struct exec_plan *plan) {
  pid_t pid = vfork();
  if (pid == 0) child_exec(plan);
  return pid;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Parses one complete request and starts its command (or answers why it cannot). */
static void start_request(const char *data, uint32_t len) {
  struct cursor c = { .p = data, .left = len, .bad = 0 };
  uint32_t id = take_u32(&c);
  uint32_t timeout_ms = take_u32(&c);
  uint32_t max_output = take_u32(&c);
  uint32_t argc = 0, envc = 0, input_len = 0;
  char *netns = take_field(&c, NULL, 1);
  char *cwd = take_field(&c, NULL, 1);
  char **argv = take_strings(&c, &argc);
  char **envp = take_strings(&c, &envc);
  char *input = take_field(&c, &input_len, 0);
  if (!c.bad && c.left != 0) c.bad = 1;
  if (!c.bad && argc == 0) {
    bad_request(id, "empty argv");
  } else if (c.bad) {
    bad_request(id, "malformed request");
  } else {
    char path[PATH_MAX];
    int error = resolve_command(argv[0], envp, path, sizeof path);
    int netns_fd = -1;
    const char *step = "spawn";
    if (error == 0 && netns[0] != '\0') {
      netns_fd = open(netns, O_RDONLY | O_CLOEXEC);
      if (netns_fd < 0) error = errno, step = "open netns";
    }
    int in_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 }, err_pipe[2] = { -1, -1 };
    /* stdout and stderr are socket pairs, as libuv (Node's spawn) makes them: a child that writes more than a pipe's
     * 64 KiB and exits at once (Node's process.exit after a large write) keeps what the larger socket buffer holds,
     * exactly as under Node's spawn. [0] is ours to read, [1] the child's. */
    if (error == 0 && (pipe2(in_pipe, O_CLOEXEC) != 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, out_pipe) != 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, err_pipe) != 0)) {
      error = errno, step = "pipe";
    }
    pid_t pid = -1;
    if (error == 0) {
      struct exec_plan plan = {
        .path = path, .argv = argv, .envp = envp, .cwd = cwd[0] != '\0' ? cwd : NULL, .netns_fd = netns_fd,
        .stdio = { in_pipe[0], out_pipe[1], err_pipe[1] }, .failed_errno = 0, .failed_step = NULL,
      };
      pid = spawn_child(&plan);
      if (pid < 0) {
        error = errno, step = "vfork";
      } else if (plan.failed_errno != 0) {
        error = plan.failed_errno, step = (const char *)plan.failed_step;
        waitpid(pid, NULL, 0);
        pid = -1;
      }
    }
    if (netns_fd >= 0) close(netns_fd);
    close_fd(&in_pipe[0]);
    close_fd(&out_pipe[1]);
    close_fd(&err_pipe[1]);
    if (error != 0) {
      close_fd(&in_pipe[1]);
      close_fd(&out_pipe[0]);
      close_fd(&err_pipe[0]);
      answer(id, ANSWER_SPAWN_FAILED, error, 0, "", 0, "", 0, step);
    } else {
      struct child *slot = NULL;
      for (int i = 0; i < MAX_CHILDREN; i++) {
        if (!children[i].used) {
          slot = &children[i];
          break;
        }
      }
      if (slot == NULL) _exit(70); /* unreachable: requests start only while the table has room */
      memset(slot, 0, sizeof *slot);
      slot->used = 1;
      children_in_use++;
      slot->pid = pid;
      slot->id = id;
      slot->deadline_ms = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
      slot->max_output = max_output > 0 ? max_output : DEFAULT_MAX_OUTPUT;
      slot->stdin_fd = in_pipe[1];
      slot->input = input;
      slot->input_len = input_len;
      input = NULL;
      slot->out[0].fd = out_pipe[0];
      slot->out[1].fd = err_pipe[0];
      fcntl(slot->stdin_fd, F_SETFL, O_NONBLOCK);
      fcntl(slot->out[0].fd, F_SETFL, O_NONBLOCK);
      fcntl(slot->out[1].fd, F_SETFL, O_NONBLOCK);
      if (slot->input_len == 0) close_fd(&slot->stdin_fd);
    }
  }
  free(netns);
  free(cwd);
  free_strings(argv, argc);
  free_strings(envp, envc);
  free(input);
}

static void read_output(struct child *child, int which) {
  struct output *out = &child->out[which];
  static char discard[65536];
  for (;;) {
    char *target = discard;
    size_t room = sizeof discard;
    if (out->len < child->max_output) {
      if (out->cap - out->len < 65536 && out->cap < child->max_output) {
        uint32_t cap = out->cap == 0 ? 65536 : out->cap * 2;
        if (cap > child->max_output) cap = child->max_output;
        char *grown = realloc(out->data, cap);
        if (grown == NULL) _exit(70);
        out->data = grown;
        out->cap = cap;
      }
      target = out->data + out->len;
      room = out->cap - out->len;
    }
    ssize_t n = read(out->fd, target, room);
    if (n > 0) {
      if (target == discard) out->truncated = 1;
      else out->len += (uint32_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close_fd(&out->fd); /* EOF or error */
    return;
  }
}

static void write_input(struct child *child) {
  while (child->input_off < child->input_len) {
    ssize_t n = write(child->stdin_fd, child->input + child->input_off, child->input_len - child->input_off);
    if (n > 0) {
      child->input_off += (uint32_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    break; /* EPIPE: the command exited without reading its stdin, which is not our failure */
  }
  close_fd(&child->stdin_fd);
}

static void finish_if_done(struct child *child) {
  if (!child->reaped) return;
  /* After a timeout the group is dead; a grandchild elsewhere holding a pipe open must not hold the answer. */
  if (!child->timed_out && (child->out[0].fd >= 0 || child->out[1].fd >= 0)) return;
  for (int i = 0; i < 2; i++)
    if (child->out[i].fd >= 0) read_output(child, i);
  close_fd(&child->out[0].fd);
  close_fd(&child->out[1].fd);
  close_fd(&child->stdin_fd);
  uint32_t flags = (child->timed_out ? FLAG_TIMED_OUT : 0) | (child->out[0].truncated ? FLAG_STDOUT_TRUNCATED : 0) |
                   (child->out[1].truncated ? FLAG_STDERR_TRUNCATED : 0);
  if (WIFSIGNALED(child->status)) {
    answer(child->id, ANSWER_KILLED, WTERMSIG(child->status), flags, child->out[0].data, child->out[0].len,
           child->out[1].data, child->out[1].len, "");
  } else {
    answer(child->id, ANSWER_EXITED, WEXITSTATUS(child->status), flags, child->out[0].data, child->out[0].len,
           child->out[1].data, child->out[1].len, "");
  }
  free(child->out[0].data);
  free(child->out[1].data);
  free(child->input);
  child->used = 0;
  children_in_use--;
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (int i = 0; i < MAX_CHILDREN; i++) {
      if (children[i].used && children[i].pid == pid && !children[i].reaped) {
        children[i].reaped = 1;
        children[i].status = status;
        /* Stragglers the command left in its group (e.g. `ip netns exec` children) go with it. */
        kill(-pid, SIGKILL);
        break;
      }
    }
  }
}

static void kill_all_and_exit(void) {
  for (int i = 0; i < MAX_CHILDREN; i++)
    if (children[i].used && !children[i].reaped) kill(-children[i].pid, SIGKILL);
  _exit(0);
}

/* Starts every complete request held, while the table has room; keeps a partial one for the next read. */
static void start_requests(void) {
  size_t off = 0;
  while (children_in_use < MAX_CHILDREN) {
    if (skip_bytes > 0) {
      size_t skip = in_len - off < skip_bytes ? in_len - off : (size_t)skip_bytes;
      skip_bytes -= skip;
      off += skip;
      if (skip_bytes > 0) break;
      continue;
    }
    if (in_len - off < 4) break;
    uint32_t body;
    memcpy(&body, in_buf + off, 4);
    if (body > MAX_REQUEST_BYTES) {
      bad_request(0, "request too large");
      skip_bytes = body;
      off += 4;
      continue;
    }
    if (in_len - off < 4 + (size_t)body) break;
    start_request(in_buf + off + 4, body);
    off += 4 + (size_t)body;
  }
  memmove(in_buf, in_buf + off, in_len - off);
  in_len -= off;
}

/* Reads what stdin holds (bounded: one request at most, plus one read); returns 0 on EOF (the parent is gone). */
static int read_requests(void) {
  if (in_cap - in_len < 65536) {
    size_t cap = in_len + 65536;
    char *grown = realloc(in_buf, cap);
    if (grown == NULL) _exit(70);
    in_buf = grown;
    in_cap = cap;
  }
  ssize_t n = read(STDIN_FILENO, in_buf + in_len, in_cap - in_len);
  if (n == 0) return 0;
  if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : 0;
  in_len += (size_t)n;
  start_requests();
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: ambit-spawner PARENT_PID\n");
    return 2;
  }
  pid_t parent = (pid_t)strtol(argv[1], NULL, 10);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) return 1; /* the parent died before the prctl */
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    perror("ambit-spawner: signalfd");
    return 1;
  }
  fcntl(STDIN_FILENO, F_SETFD, FD_CLOEXEC);
  fcntl(STDOUT_FILENO, F_SETFD, FD_CLOEXEC);
  fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
  struct pollfd fds[2 + MAX_CHILDREN * 3];
  for (;;) {
    int nfds = 0;
    fds[nfds++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
    /* A full table stops reading requests: they wait in the pipe until a command finishes. */
    fds[nfds++] = (struct pollfd){ .fd = children_in_use < MAX_CHILDREN ? STDIN_FILENO : -1, .events = POLLIN };
    int64_t now = now_ms();
    int timeout = -1;
    for (int i = 0; i < MAX_CHILDREN; i++) {
      struct child *child = &children[i];
      if (!child->used) continue;
      if (child->deadline_ms != 0 && !child->reaped) {
        int64_t wait = child->deadline_ms - now;
        if (wait < 0) wait = 0;
        if (timeout < 0 || wait < timeout) timeout = (int)wait;
      }
      if (child->stdin_fd >= 0) fds[nfds++] = (struct pollfd){ .fd = child->stdin_fd, .events = POLLOUT };
      if (child->out[0].fd >= 0) fds[nfds++] = (struct pollfd){ .fd = child->out[0].fd, .events = POLLIN };
      if (child->out[1].fd >= 0) fds[nfds++] = (struct pollfd){ .fd = child->out[1].fd, .events = POLLIN };
    }
    int ready = poll(fds, (nfds_t)nfds, timeout);
    if (ready < 0 && errno != EINTR) {
      perror("ambit-spawner: poll");
      kill_all_and_exit();
    }
    if (ready > 0 && fds[0].revents != 0) {
      struct signalfd_siginfo info;
      while (read(sfd, &info, sizeof info) > 0) {
      }
      reap();
    }
    /* Each child's pipes: the poll set names fds, so look them up by fd. */
    for (int i = 2; ready > 0 && i < nfds; i++) {
      if (fds[i].revents == 0) continue;
      for (int j = 0; j < MAX_CHILDREN; j++) {
        struct child *child = &children[j];
        if (!child->used) continue;
        if (child->stdin_fd == fds[i].fd) write_input(child);
        else if (child->out[0].fd == fds[i].fd) read_output(child, 0);
        else if (child->out[1].fd == fds[i].fd) read_output(child, 1);
        else continue;
        break;
      }
    }
    now = now_ms();
    for (int i = 0; i < MAX_CHILDREN; i++) {
      struct child *child = &children[i];
      if (!child->used) continue;
      if (!child->reaped && child->deadline_ms != 0 && now >= child->deadline_ms && !child->timed_out) {
        child->timed_out = 1;
        kill(-child->pid, SIGKILL);
        kill(child->pid, SIGKILL);
      }
      finish_if_done(child);
    }
    if (children_in_use < MAX_CHILDREN && in_len > 0) start_requests(); /* requests that waited for a slot */
    if (ready > 0 && fds[1].fd >= 0 && fds[1].revents != 0 && !read_requests()) kill_all_and_exit();
  }
}
