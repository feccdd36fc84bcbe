// MPICommunicator: the only code in Lockstep that talks to MPI.
import CMPI
import Collectives
import Foundation

public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public var kind: String { "mpi" }
    private let comm = lockstep_comm_world()

    /// True when this process was started by mpirun/mpiexec or srun (OpenMPI or PMI variables).
    public static var launchedByMPI: Bool {
        LaunchEnvironment.startedByLauncher
    }

    /// Initialises MPI (once per process; MPI cannot be re-initialised after finalize).
    public init() {
        var provided: Int32 = 0
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            MPI_Init_thread(nil, nil, lockstep_thread_funneled(), &provided)
        }
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
    }

    public func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    private func check(_ code: Int32, _ what: String) throws {
        if code != lockstep_success() {
            throw CollectiveError(failedRank: rank, message: "\(what) failed with MPI error \(code)")
        }
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {
        if buffer.isEmpty { return }
        try check(MPI_Allreduce(lockstep_in_place(), buffer.baseAddress, Int32(buffer.count),
                                lockstep_type_float(), mpiOp(op), comm), "MPI_Allreduce")
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws {
        if buffer.isEmpty { return }
        try check(MPI_Allreduce(lockstep_in_place(), buffer.baseAddress, Int32(buffer.count),
                                lockstep_type_double(), mpiOp(op), comm), "MPI_Allreduce")
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws {
        if buffer.isEmpty { return }
        try check(MPI_Allreduce(lockstep_in_place(), buffer.baseAddress, Int32(buffer.count),
                                lockstep_type_int64(), mpiOp(op), comm), "MPI_Allreduce")
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        if buffer.isEmpty { return }
        // MPI counts are Int32: send large buffers in chunks.
        let chunk = 1 << 30
        var offset = 0
        while offset < buffer.count {
            let n = min(chunk, buffer.count - offset)
            try check(MPI_Bcast(buffer.baseAddress! + offset, Int32(n), lockstep_type_byte(), Int32(root), comm), "MPI_Bcast")
            offset += n
        }
    }

    public func barrier() throws { try check(MPI_Barrier(comm), "MPI_Barrier") }

    public func abort(_ message: String) {
        fflush(stdout)
        fflush(stderr)
        MPI_Abort(comm, 1)
    }

    private func mpiOp(_ op: ReduceOp) -> MPI_Op {
        switch op {
        case .sum: return lockstep_op_sum()
        case .max: return lockstep_op_max()
        case .min: return lockstep_op_min()
        }
    }
}
