// The few calls Swift cannot import from glibc (signalfd's header is not in the Glibc module, and
// the wait status accessors are macros).
#define _GNU_SOURCE
#include "csupervisor.h"
#include <sys/socket.h>
#include <errno.h>
#include <sys/signalfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int ks_signalfd(const sigset_t *mask) { return signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC); }

int ks_signalfd_next(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n == (ssize_t)sizeof info) return (int)info.ssi_signo;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;
}

int ks_exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

int ks_term_signal(int status) { return WIFSIGNALED(status) ? WTERMSIG(status) : 0; }

int ks_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

void ks_set_process_name(const char *name) { (void)prctl(PR_SET_NAME, name, 0, 0, 0); }
