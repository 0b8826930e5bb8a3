// MPI_Allreduce (MPI_SUM, in place, as unet-dist calls it), timed on every rank, the slowest
// rank's time kept.
//
//   mpicc -O2 -o allreduce_bench tools/scaling/allreduce_bench.c
//   mpirun -n 2 ./allreduce_bench sweep [MAX_BYTES [ROUNDS]]
//   mpirun -n 2 ./allreduce_bench replay DOUBLE_COUNTS FLOAT_COUNTS [ROUNDS]
//
// sweep: double and float, 8 bytes to MAX_BYTES (default 16 MiB; one size per doubling up to
// 64 KiB, four per doubling above, where the gradient allreduce's sizes lie), one CSV row per
// type and size: type,bytes,ranks,min_us,p25_us,median_us over ROUNDS rounds (default 41) of one
// call after a barrier. tools/scaling/model.py fits the link's latency and inverse bandwidth to
// the minima with Open MPI's own choice of algorithm per size and rank count.
//
// replay: one training step's allreduces without the step's arithmetic: DOUBLE_COUNTS (comma-
// separated element counts, in order; BatchNorm's reductions, `bench --json`'s
// allreduce_double_counts) then FLOAT_COUNTS (the gradient sum), back to back after a barrier,
// ROUNDS rounds (default 21); one CSV row: ranks,calls,min_ms,p25_ms,median_ms,cpu_share: the
// last the median over rounds of the CPU time the ranks spent (user and system, all threads;
// their mean) over the round's wall time. A busy-waiting rank given a whole vCPU shows 1; one that
// a loaded machine's scheduler keeps waiting, less.
//
// Single calls and minima are for a shared machine: a call that a neighbour's process interrupted
// is slow for reasons that are not the link's, and the fastest of many is the link's figure; the
// median says how much the machine's load adds.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double slowest(double dt) {
    double out;
    MPI_Allreduce(&dt, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return out;
}

// One round: an allreduce after a barrier, the slowest rank's seconds.
static double one_call(void *buf, int count, MPI_Datatype type) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, buf, count, type, MPI_SUM, MPI_COMM_WORLD);
    return slowest(MPI_Wtime() - t0);
}

// This process's user and system seconds, all threads.
static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// "12,34,56" -> counts; returns how many.
static int parse_counts(const char *text, long **out) {
    int n = 1;
    for (const char *p = text; *p; p++) n += *p == ',';
    long *v = malloc(sizeof(long) * (size_t)n);
    char *copy = strdup(text), *save = NULL;
    int k = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) v[k++] = atol(tok);
    free(copy);
    *out = v;
    return k;
}

static int usage(int rank) {
    if (rank == 0)
        fprintf(stderr, "usage: allreduce_bench sweep [MAX_BYTES [ROUNDS]]\n"
                        "       allreduce_bench replay DOUBLE_COUNTS FLOAT_COUNTS [ROUNDS]\n");
    MPI_Finalize();
    return 2;
}

static int sweep(int rank, int size, long max_bytes, int reps) {
    char *buf = calloc((size_t)max_bytes, 1);   // zeros: sums stay finite
    double *times = malloc(sizeof(double) * (size_t)reps);
    // Warm-up: the first calls after start-up take tens of ms (connections, the other host's
    // daemons still busy), which would land on the smallest sizes.
    for (int i = 0; i < 2000; i++) MPI_Allreduce(MPI_IN_PLACE, buf, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (int i = 0; i < 3; i++) MPI_Allreduce(MPI_IN_PLACE, buf, (int)(max_bytes / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("type,bytes,ranks,min_us,p25_us,median_us\n");
    const char *names[2] = {"double", "float"};
    MPI_Datatype types[2] = {MPI_DOUBLE, MPI_FLOAT};
    int widths[2] = {8, 4};
    for (int t = 0; t < 2; t++) {
        for (long bytes = 8; bytes <= max_bytes;) {
            int count = (int)(bytes / widths[t]);
            one_call(buf, count, types[t]);   // warm-up: connections, buffers
            for (int r = 0; r < reps; r++) times[r] = one_call(buf, count, types[t]);
            qsort(times, (size_t)reps, sizeof(double), compare);
            if (rank == 0) {
                printf("%s,%ld,%d,%.3f,%.3f,%.3f\n", names[t], (long)count * widths[t], size,
                       times[0] * 1e6, times[reps / 4] * 1e6, times[reps / 2] * 1e6);
                fflush(stdout);
            }
            if (bytes < 65536) bytes *= 2;
            else {
                long next = (long)(bytes * 1.189207115 + 0.5);   // 2^(1/4)
                bytes = next - next % 8;
            }
        }
    }
    free(times);
    free(buf);
    return 0;
}

static int replay(int rank, int size, const char *doubles, const char *floats, int reps) {
    long *dc, *fc;
    int nd = parse_counts(doubles, &dc), nf = parse_counts(floats, &fc);
    long most = 0;
    for (int i = 0; i < nd; i++) if (dc[i] * 8 > most) most = dc[i] * 8;
    for (int i = 0; i < nf; i++) if (fc[i] * 4 > most) most = fc[i] * 4;
    char *buf = calloc((size_t)most, 1);
    double *times = malloc(sizeof(double) * (size_t)reps), *shares = malloc(sizeof(double) * (size_t)reps);
    for (int r = -1; r < reps; r++) {   // round -1: warm-up
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime(), c0 = cpu_seconds();
        for (int i = 0; i < nd; i++) MPI_Allreduce(MPI_IN_PLACE, buf, (int)dc[i], MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (int i = 0; i < nf; i++) MPI_Allreduce(MPI_IN_PLACE, buf, (int)fc[i], MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double wall = MPI_Wtime() - t0, share = (cpu_seconds() - c0) / wall, sum;
        double dt = slowest(wall);
        MPI_Allreduce(&share, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        if (r >= 0) { times[r] = dt; shares[r] = sum / size; }
    }
    qsort(times, (size_t)reps, sizeof(double), compare);
    qsort(shares, (size_t)reps, sizeof(double), compare);
    if (rank == 0) {
        printf("ranks,calls,min_ms,p25_ms,median_ms,cpu_share\n%d,%d,%.3f,%.3f,%.3f,%.2f\n", size, nd + nf,
               times[0] * 1e3, times[reps / 4] * 1e3, times[reps / 2] * 1e3, shares[reps / 2]);
        fflush(stdout);
    }
    free(times);
    free(shares);
    free(buf);
    free(dc);
    free(fc);
    return 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size, status;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc >= 2 && strcmp(argv[1], "sweep") == 0) {
        long max_bytes = argc > 2 ? atol(argv[2]) : 16L << 20;
        int reps = argc > 3 ? atoi(argv[3]) : 41;
        if (max_bytes < 8 || reps < 1) return usage(rank);
        status = sweep(rank, size, max_bytes, reps);
    } else if (argc >= 4 && strcmp(argv[1], "replay") == 0) {
        int reps = argc > 4 ? atoi(argv[4]) : 21;
        if (reps < 1) return usage(rank);
        status = replay(rank, size, argv[2], argv[3], reps);
    } else {
        return usage(rank);
    }
    MPI_Finalize();
    return status;
}
