#ifndef CSUPERVISOR_H
#define CSUPERVISOR_H
#include <signal.h>

/// signalfd(2) for `mask`, non-blocking and close-on-exec; -1 with errno on failure.
int ks_signalfd(const sigset_t *mask);
/// The number of the next pending signal on a signalfd; 0 when none is pending, -1 on error.
int ks_signalfd_next(int fd);
/// waitpid(2) status: the exit code if the process exited, else -1.
int ks_exit_code(int status);
/// waitpid(2) status: the signal that ended the process, else 0.
int ks_term_signal(int status);
/// accept4(2): the next connection, non-blocking and close-on-exec; -1 with errno when none.
int ks_accept(int fd);
/// prctl(PR_SET_NAME): the process's name in ps, top and the journal (at most 15 bytes are kept).
/// `keyroll agent --lean` starts the supervisor by descriptor (fexecve), and kernels before 6.14
/// name such a process after the descriptor's number.
void ks_set_process_name(const char *name);

#endif
