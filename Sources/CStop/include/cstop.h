#ifndef UNET_DIST_CSTOP_H
#define UNET_DIST_CSTOP_H

/// Installs handlers that only record the signal: SIGTERM and SIGINT (what SLURM, a time limit
/// and a user send) and SIGUSR1 (what mpirun forwards without killing the job, and what
/// `sbatch --signal` sends ahead of a time limit). The training loop polls the record at step
/// boundaries and stops every rank together.
void cstop_install_handlers(void);

/// The first stop signal received, or 0.
int cstop_signal(void);

/// Ignores SIGXFSZ, so that writing past `ulimit -f` fails with EFBIG and is reported as an
/// error naming the file, instead of killing the process mid-write.
void cstop_ignore_file_size_signal(void);

#endif
