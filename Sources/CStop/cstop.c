#include "cstop.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>

// Lock-free, so storing from a signal handler is async-signal-safe.
static atomic_int received;

static void record(int signo) {
    int none = 0;
    // Keeps the first signal; later ones (mpirun's SIGTERM after a terminal's SIGINT) change nothing.
    atomic_compare_exchange_strong(&received, &none, signo);
}

void cstop_install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = record;
    sigemptyset(&sa.sa_mask);
    // Restarted system calls: a signal must never turn into a failed read or write.
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int cstop_signal(void) { return atomic_load(&received); }

void cstop_ignore_file_size_signal(void) { signal(SIGXFSZ, SIG_IGN); }
