// bench/one-host-reduction.c: how fast could ranks that share one host sum a gradient?
//
// Times, on the ranks of one host, three ways of leaving every rank with the element-wise sum of
// every rank's N floats, each with its source written just before (as backward leaves a
// gradient) and the caches flushed of everything else (as a training step leaves them):
//   mpi     MPI_Allreduce in place (what Lockstep's pair path and float path call today);
//   window  an MPI-3 shared window holding every rank's gradient: after a barrier each rank adds
//           its 1/P slice of all P gradients (in rank order) into its own gradient, and after a
//           second barrier copies the other slices of the sum from their owners;
//   inplace the same window, but without the copy: each rank's optimizer would read every
//           slice of the sum where its owner left it (the lower bound of the design).
// For 2 ranks every way adds each element once (b0 + b1), so all give the same bits.
// Build and run with bench/one-host-reduction (mpicc, mpirun); prints medians in µs.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm host;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &host);
    int hostSize;
    MPI_Comm_size(host, &hostSize);
    if (hostSize != size) {
        if (rank == 0) fprintf(stderr, "one-host-reduction: the %d ranks are not all on one host\n", size);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const size_t n = argc > 1 ? (size_t)atol(argv[1]) : 672000;   // the MLP's parameters
    const int reps = argc > 2 ? atoi(argv[2]) : 41;
    const size_t flushBytes = 64u << 20;
    char *flush = malloc(flushBytes);
    memset(flush, 1, flushBytes);
    float *grad = malloc(n * sizeof(float));
    float *win;
    MPI_Win window;
    MPI_Win_allocate_shared((MPI_Aint)(n * sizeof(float)), sizeof(float), MPI_INFO_NULL, host, &win, &window);
    float **peer = malloc((size_t)size * sizeof(float *));
    for (int r = 0; r < size; r++) {
        MPI_Aint bytes; int unit;
        MPI_Win_shared_query(window, r, &bytes, &unit, &peer[r]);
    }
    const size_t lo = n * (size_t)rank / (size_t)size, hi = n * (size_t)(rank + 1) / (size_t)size;
    double *t[3];
    for (int k = 0; k < 3; k++) t[k] = malloc((size_t)reps * sizeof(double));
    volatile char sink = 0;
    for (int rep = 0; rep < reps; rep++) {
        for (int k = 0; k < 3; k++) {
            for (size_t i = 0; i < flushBytes; i += 64) flush[i]++;
            sink += flush[rep];
            float *src = k == 0 ? grad : win;
            for (size_t i = 0; i < n; i++) src[i] = (float)((i * 7 + (size_t)rank * 13 + (size_t)rep) % 1000) * 1e-3f;
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            if (k == 0) {
                MPI_Allreduce(MPI_IN_PLACE, grad, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            } else {
                MPI_Win_sync(window);
                MPI_Barrier(host);
                MPI_Win_sync(window);
                float *sum = k == 1 ? grad : win;   // inplace: the sum stays in the window
                for (size_t i = lo; i < hi; i++) {
                    float s = peer[0][i];
                    for (int r = 1; r < size; r++) s = s + peer[r][i];
                    sum[i] = s;
                }
                if (k == 1) memcpy(win + lo, grad + lo, (hi - lo) * sizeof(float));
                MPI_Win_sync(window);
                MPI_Barrier(host);
                MPI_Win_sync(window);
                if (k == 1)
                    for (int r = 0; r < size; r++) {
                        if (r == rank) continue;
                        const size_t a = n * (size_t)r / (size_t)size, b = n * (size_t)(r + 1) / (size_t)size;
                        memcpy(grad + a, peer[r] + a, (b - a) * sizeof(float));
                    }
            }
            double dt = MPI_Wtime() - t0, worst;
            MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            t[k][rep] = worst;
        }
    }
    if (rank == 0) {
        const char *names[3] = {"mpi", "window", "inplace"};
        printf("%d ranks, %zu floats (%.2f MB), caches flushed before each, %d reps: median µs\n", size, n, n * 4e-6, reps);
        for (int k = 0; k < 3; k++) {
            qsort(t[k], (size_t)reps, sizeof(double), cmp);
            printf("%-8s %8.1f\n", names[k], t[k][reps / 2] * 1e6);
        }
    }
    MPI_Win_free(&window);
    MPI_Finalize();
    return sink == 42;
}
