// MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, ...) are C macros that
// Swift cannot import; these inline functions hand them over as values.
#include <mpi.h>

static inline MPI_Comm lockstep_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype lockstep_type_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype lockstep_type_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype lockstep_type_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype lockstep_type_int64(void) { return MPI_INT64_T; }
static inline MPI_Op lockstep_op_sum(void) { return MPI_SUM; }
static inline MPI_Op lockstep_op_max(void) { return MPI_MAX; }
static inline MPI_Op lockstep_op_min(void) { return MPI_MIN; }
static inline void *lockstep_in_place(void) { return MPI_IN_PLACE; }
static inline int lockstep_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int lockstep_success(void) { return MPI_SUCCESS; }
static inline MPI_Datatype lockstep_type_int(void) { return MPI_INT; }
static inline MPI_Status *lockstep_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Request lockstep_request_null(void) { return MPI_REQUEST_NULL; }
static inline int lockstep_any_source(void) { return MPI_ANY_SOURCE; }

/// `len` floats at the start of a piece of `stride` floats, with the extent of one piece: the
/// datatype of the chunk-tree all-gather (MPICommunicator.allGather(pieces:)). Free it with
/// MPI_Type_free (communication already started with it completes normally).
static inline MPI_Datatype lockstep_piece_type(int len, long stride) {
    MPI_Datatype inner, piece;
    MPI_Type_contiguous(len, MPI_FLOAT, &inner);
    MPI_Type_create_resized(inner, 0, (MPI_Aint)stride * (MPI_Aint)sizeof(float), &piece);
    MPI_Type_free(&inner);
    MPI_Type_commit(&piece);
    return piece;
}

/// Exact mode's chunk-tree scatter (MPICommunicator.scatterPieces): this rank's pieces[rank]
/// pieces of `stride` floats are at `local`; rank q receives elements [segLo[q], segLo[q] +
/// segLen[q]) of every rank's pieces, piece after piece in rank order, at `received`. One
/// MPI_Alltoallw (MPI_Ialltoallw when `request` is not NULL) with a strided datatype per
/// destination. `ints` (4·size) and `types` (2·size) must outlive a started request; free the
/// datatypes with lockstep_free_types once it has completed (MPI may read the arrays until then).
static inline int lockstep_scatter_pieces(float *local, const int *pieces, long stride, const int *segLo, const int *segLen,
                                          float *received, MPI_Comm comm, MPI_Request *request, int *ints, MPI_Datatype *types) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int *sendCounts = ints, *sendDispl = ints + size, *recvCounts = ints + 2 * size, *recvDispl = ints + 3 * size;
    MPI_Datatype *sendTypes = types, *recvTypes = types + size;
    int before = 0;
    for (int q = 0; q < size; q++) {
        sendCounts[q] = pieces[rank] > 0 && segLen[q] > 0 ? 1 : 0;
        sendDispl[q] = segLo[q] * (int)sizeof(float);
        sendTypes[q] = MPI_FLOAT;
        if (sendCounts[q]) {
            MPI_Type_vector(pieces[rank], segLen[q], (int)stride, MPI_FLOAT, &sendTypes[q]);
            MPI_Type_commit(&sendTypes[q]);
        }
        recvCounts[q] = pieces[q] > 0 && segLen[rank] > 0 ? 1 : 0;
        recvDispl[q] = before * segLen[rank] * (int)sizeof(float);
        recvTypes[q] = MPI_FLOAT;
        if (recvCounts[q]) {
            MPI_Type_contiguous(pieces[q] * segLen[rank], MPI_FLOAT, &recvTypes[q]);
            MPI_Type_commit(&recvTypes[q]);
        }
        before += pieces[q];
    }
    return request ? MPI_Ialltoallw(local, sendCounts, sendDispl, sendTypes, received, recvCounts, recvDispl, recvTypes, comm, request)
                   : MPI_Alltoallw(local, sendCounts, sendDispl, sendTypes, received, recvCounts, recvDispl, recvTypes, comm);
}

/// Frees the derived datatypes among `types[0..<n]` (lockstep_scatter_pieces's), skipping
/// entries it never set (NULL: the exchange failed before it started, e.g. a timed-out arrival).
static inline void lockstep_free_types(MPI_Datatype *types, int n) {
    for (int q = 0; q < n; q++)
        if (types[q] != NULL && types[q] != MPI_FLOAT && types[q] != MPI_DATATYPE_NULL) MPI_Type_free(&types[q]);
}

/// The ranks of `comm` that share this host's memory (MPI_COMM_TYPE_SHARED), in a new communicator.
static inline int lockstep_split_host(MPI_Comm comm, MPI_Comm *host) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    return MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, host);
}

/// An MPI-3 shared window of `bytes` per rank (a multiple of 64) on `host`, each rank's part
/// allocated on its own ("alloc_shared_noncontig": each may sit near its rank), opened for
/// passive synchronisation (MPI_Win_lock_all) so that MPI_Win_sync orders memory; every rank's
/// base in `bases` (the size of `host`). Returns an MPI error code.
static inline int lockstep_shared_window(MPI_Comm host, long bytes, MPI_Win *win, void **bases) {
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *mine = NULL;
    int rc = MPI_Win_allocate_shared((MPI_Aint)bytes, 4, info, host, &mine, win);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) return rc;
    int size;
    MPI_Comm_size(host, &size);
    for (int r = 0; r < size; r++) {
        MPI_Aint got;
        int unit;
        rc = MPI_Win_shared_query(*win, r, &got, &unit, &bases[r]);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_Win_lock_all(MPI_MODE_NOCHECK, *win);
}

static inline int lockstep_free_shared_window(MPI_Win *win) {
    MPI_Win_unlock_all(*win);
    return MPI_Win_free(win);
}
