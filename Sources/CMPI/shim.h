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
