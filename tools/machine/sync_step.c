// A data-parallel training step with none of unet-dist's code in it: per image, a fixed amount
// of arithmetic (FMAs whose operands come from L1, as in the convolution kernels) and a pass
// over a buffer that grows with the batch (as activations do), cut into SEGMENTS pieces, each
// followed by a small allreduce (as the BatchNorm reductions are). Prints the global images/s.
//
// `tools/bench_scaling.sh --synthetic` times it with the same alternation as unet-dist itself:
// -n 1, -n 2, and two independent -n 1 runs at half the batch. Whatever -n 2 loses here against
// -n 1 is the machine's toll on lockstep ranks, which no implementation of our step avoids.
//
//   mpicc -O3 -march=native -o sync_step sync_step.c
//   mpirun -n 2 ./sync_step BATCH STEPS [SEGMENTS [KFMA_PER_IMAGE [MB_PER_IMAGE]]]
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "fma_loops.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3 || atoi(argv[1]) < 1 || atoi(argv[2]) < 1 || (argc > 3 && atoi(argv[3]) < 1)) {
        if (rank == 0) fprintf(stderr, "usage: sync_step BATCH STEPS [SEGMENTS [KFMA_PER_IMAGE [MB_PER_IMAGE]]]\n");
        MPI_Finalize();
        return 2;
    }
    int batch = atoi(argv[1]), steps = atoi(argv[2]);
    int segments = argc > 3 ? atoi(argv[3]) : 29;
    long kfma = argc > 4 ? atol(argv[4]) : 150000;   // thousands of 16-lane FMAs per image
    long mb = argc > 5 ? atol(argv[5]) : 20;          // streamed MB per image and step
    // This rank's share of the batch, as unet-dist splits it.
    int local = batch / size + (rank < batch % size);
    long iterations = kfma * 1000 / 24 * local / segments;
    long floats = mb * local * (1 << 20) / 4;
    float *memory = malloc((floats + 1) * sizeof(float));
    if (!memory) {
        fprintf(stderr, "sync_step: rank %d: cannot allocate %ld MB\n", rank, mb * local);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (long i = 0; i < floats; i++) memory[i] = 1;
    init_operands();

    double statistics[128] = {0}, reduced[128];
    double start = 0;
    for (int step = 0; step <= steps; step++) {  // step 0 warms up
        if (step == 1) { MPI_Barrier(MPI_COMM_WORLD); start = now(); }
        for (int k = 0; k < segments; k++) {
            l1_fmas(iterations);
            long from = floats * k / segments, to = floats * (k + 1) / segments;
            for (long i = from; i < to; i++) memory[i] = memory[i] * 0.999f + 1e-7f;
            MPI_Allreduce(statistics, reduced, 128, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        }
    }
    if (rank == 0) printf("%.3f\n", steps * batch / (now() - start));
    free(memory);
    MPI_Finalize();
    return 0;
}
