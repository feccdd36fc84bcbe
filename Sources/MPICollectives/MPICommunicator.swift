// MPICommunicator: the only code in Lockstep that talks to MPI.
//
// Every collective has a deadline: `collectiveTimeout` plus the time its bytes take over the
// slowest link allowed (CollectiveTimeout.seconds). Small collectives are MPI's non-blocking ones
// (MPI_Iallreduce, MPI_Ibcast, MPI_Ibarrier) completed by polling against it: when it passes,
// the rank holds a roll call on a private duplicate of the communicator (every rank polling a
// collective answers it) and throws an error naming the ranks, and their hosts, that did not
// answer. Large ones first meet at a polled barrier, then run MPI's faster blocking call under
// a watchdog: a transfer that stalls after every rank arrived (a cut link: TCP retransmits for
// many minutes) ends the job from the watchdog's thread with a message and MPI_Abort.
import CMPI
import Collectives
import Foundation
import TensorCore

public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public var kind: String { "mpi" }
    private let comm = lockstep_comm_world()
    /// A duplicate of the world communicator for roll calls, apart from the collectives' traffic.
    var control: MPI_Comm?
    public var collectiveTimeout = CollectiveTimeout.defaultSeconds
    public var context = ""
    /// Every rank's hostname, in rank order (gathered at start-up), for messages.
    public private(set) var hosts: [String] = []
    /// Ends the job when a blocking transfer outlives its deadline (see the top of this file).
    private lazy var watchdog = Watchdog { [unowned self] text in
        fputs("rank \(rank): \(text)\n", stderr)
        abort(text)
    }
    static let rollCallTag: Int32 = 1, answerTag: Int32 = 2
    /// All-reduces of at least this many values take the barrier-then-blocking path.
    private static let largeCount = 1 << 16

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
        var dup: MPI_Comm? = comm
        MPI_Comm_dup(comm, &dup)
        control = dup
        hosts = (try? hostNames(self)) ?? []
        let names = Array(Set(hosts)).sorted()
        peers = names.count > 1 ? "hosts " + names.joined(separator: ", ") : "ranks 0-\(size - 1)" + (names.count == 1 ? " on \(names[0])" : "")
    }

    deinit { scratch?.deallocate() }

    public func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 {
            for w in windows { w.free() }
            windows = []
            MPI_Finalize()
        }
    }

    func check(_ code: Int32, _ what: String) throws {
        if code != lockstep_success() {
            throw CollectiveError(failedRank: rank, message: "\(what) failed with MPI error \(code)")
        }
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {
        try allReduce(UnsafeMutableRawPointer(buffer.baseAddress), buffer.count, lockstep_type_float(), "float", op)
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws {
        try allReduce(UnsafeMutableRawPointer(buffer.baseAddress), buffer.count, lockstep_type_double(), "double", op)
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws {
        try allReduce(UnsafeMutableRawPointer(buffer.baseAddress), buffer.count, lockstep_type_int64(), "int64", op)
    }

    private func allReduce(_ data: UnsafeMutableRawPointer?, _ count: Int, _ type: MPI_Datatype, _ typeName: String, _ op: ReduceOp) throws {
        if count == 0 { return }
        let mpiOperation = mpiOp(op)
        try collective(count, bytes: count * MemoryLayout<Int64>.size, { "MPI_Allreduce (\(op)) of \(count) \(typeName) values" },
                       blocking: { MPI_Allreduce(lockstep_in_place(), data, Int32(count), type, mpiOperation, comm) },
                       start: { MPI_Iallreduce(lockstep_in_place(), data, Int32(count), type, mpiOperation, comm, &$0) })
    }

    private var scratch: UnsafeMutableRawPointer?
    private var scratchBytes = 0

    /// Sharding (ZeRO-1): MPI_Reduce_scatter into a block of this rank's size, copied into place.
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        try reduceScatter(UnsafeMutableRawPointer(buffer.baseAddress), counts, elementSize: 4, lockstep_type_float(), "float")
    }
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Int64>, counts: [Int]) throws {
        try reduceScatter(UnsafeMutableRawPointer(buffer.baseAddress), counts, elementSize: 8, lockstep_type_int64(), "int64")
    }
    private func reduceScatter(_ data: UnsafeMutableRawPointer?, _ counts: [Int], elementSize: Int, _ type: MPI_Datatype, _ typeName: String) throws {
        precondition(counts.count == size, "reduceScatter: one count per rank")
        let total = counts.reduce(0, +)
        guard total > 0, let data else { return }
        let mine = counts[rank], offset = counts[..<rank].reduce(0, +)
        // A block-sized receive buffer kept between calls (a fresh one every step would page-fault).
        if scratchBytes < mine * elementSize {
            scratch?.deallocate()
            scratchBytes = mine * elementSize
            scratch = UnsafeMutableRawPointer.allocate(byteCount: max(scratchBytes, 1), alignment: 64)
        }
        let block = scratch!
        var counts32 = counts.map { Int32($0) }
        try counts32.withUnsafeMutableBufferPointer { c in   // stays valid until the request completes
            try collective(total, bytes: total * elementSize, { "MPI_Reduce_scatter of \(total) \(typeName) values" },
                           blocking: { MPI_Reduce_scatter(data, block, c.baseAddress, type, lockstep_op_sum(), comm) },
                           start: { MPI_Ireduce_scatter(data, block, c.baseAddress, type, lockstep_op_sum(), comm, &$0) })
        }
        (data + offset * elementSize).copyMemory(from: block, byteCount: mine * elementSize)
    }

    /// MPI_Allgatherv in place.
    public func allGather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        precondition(counts.count == size, "allGather: one count per rank")
        guard buffer.count > 0 else { return }
        var counts32 = counts.map { Int32($0) }
        var displacements = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) { displacements[r] = displacements[r - 1] + counts32[r - 1] }
        let data = buffer.baseAddress
        try counts32.withUnsafeMutableBufferPointer { c in
            try displacements.withUnsafeMutableBufferPointer { d in
                try collective(buffer.count, bytes: buffer.count * 4, { "MPI_Allgatherv of \(buffer.count) float values" },
                               blocking: { MPI_Allgatherv(lockstep_in_place(), 0, lockstep_type_float(), data, c.baseAddress, d.baseAddress, lockstep_type_float(), comm) },
                               start: { MPI_Iallgatherv(lockstep_in_place(), 0, lockstep_type_float(), data, c.baseAddress, d.baseAddress, lockstep_type_float(), comm, &$0) })
            }
        }
    }

    /// Exact mode's chunk-tree exchange: one MPI_Alltoallw with a strided datatype per
    /// destination (lockstep_scatter_pieces in the shim).
    public func scatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                              into received: UnsafeMutablePointer<Float>) throws {
        let args = ScatterArguments(pieces: pieces, segments: segments, size: size)
        defer { args.release() }
        let n = pieces.reduce(0, +) * segments.reduce(0) { max($0, $1.count) }
        try collective(n, bytes: n * 4, { "MPI_Alltoallw of \(pieces.reduce(0, +)) chunk-tree blocks" },
                       blocking: { lockstep_scatter_pieces(local, args.pieces, stride, args.segLo, args.segLen, received, comm, nil, args.ints, args.types) },
                       start: { lockstep_scatter_pieces(local, args.pieces, stride, args.segLo, args.segLen, received, comm, &$0, args.ints, args.types) })
    }

    /// The same, started (overlap buckets) and completed by polling like startAllReduce.
    public func startScatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                                   into received: UnsafeMutablePointer<Float>) throws -> PendingCollective {
        let args = ScatterArguments(pieces: pieces, segments: segments, size: size)
        let n = pieces.reduce(0, +) * segments.reduce(0) { max($0, $1.count) }
        let pending = MPIPending(owner: self, what: "MPI_Ialltoallw of \(pieces.reduce(0, +)) chunk-tree blocks",
                                 seconds: CollectiveTimeout.seconds(base: collectiveTimeout, payload: n * 4))
        pending.arguments = args
        try check(lockstep_scatter_pieces(local, args.pieces, stride, args.segLo, args.segLen, received, comm, &pending.request, args.ints, args.types),
                  "MPI_Ialltoallw")
        return pending
    }

    /// lockstep_scatter_pieces's arrays, which MPI may read until the exchange completes.
    fileprivate final class ScatterArguments {
        let pieces, segLo, segLen, ints: UnsafeMutablePointer<Int32>
        let types: UnsafeMutablePointer<MPI_Datatype?>
        let size: Int
        private var released = false
        init(pieces p: [Int], segments: [Range<Int>], size: Int) {
            precondition(p.count == size && segments.count == size, "one piece count and one segment per rank")
            self.size = size
            pieces = .allocate(capacity: size); segLo = .allocate(capacity: size); segLen = .allocate(capacity: size)
            ints = .allocate(capacity: 4 * size)
            types = .allocate(capacity: 2 * size)
            types.initialize(repeating: nil, count: 2 * size)
            for q in 0..<size { pieces[q] = Int32(p[q]); segLo[q] = Int32(segments[q].lowerBound); segLen[q] = Int32(segments[q].count) }
        }
        /// Frees the derived datatypes (once the exchange is complete).
        func release() {
            if !released { lockstep_free_types(types, Int32(2 * size)) }
            released = true
        }
        deinit {
            pieces.deallocate(); segLo.deallocate(); segLen.deallocate(); ints.deallocate(); types.deallocate()
        }
    }

    /// A collective of `count` elements. Large ones (gradients, parameters): MPI's blocking
    /// all-reduce is markedly faster than its non-blocking one (9% of an MLP step at 2 ranks
    /// here), so first check that every rank has arrived with a polled barrier (which can time
    /// out), then run the blocking one. Small ones run non-blocking, polled against the deadline.
    /// `bytes` (per rank) scales the deadline.
    private func collective(_ count: Int, bytes: Int, _ what: @escaping () -> String, blocking: () -> Int32, start: (inout MPI_Request?) -> Int32) throws {
        let seconds = CollectiveTimeout.seconds(base: collectiveTimeout, payload: bytes)
        if count >= Self.largeCount {
            var arrival = lockstep_request_null()
            try check(MPI_Ibarrier(comm, &arrival), "MPI_Ibarrier")
            try complete(&arrival, seconds: collectiveTimeout, what)
            let context = self.context, peers = self.peers
            let code = watchdog.guarding(seconds: seconds, {
                "\(what()) at \(context) timed out after \(String(format: "%.3g", seconds)) s: every rank had arrived, then the transfer stalled (a link between \(peers) is cut or far slower than \(Int(CollectiveTimeout.slowestLink / 1e6)) MB/s); set check.collective_timeout to wait longer"
            }, blocking)
            try check(code, what())
            return
        }
        var request = lockstep_request_null()
        try check(start(&request), what())
        try complete(&request, seconds: seconds, what)
    }

    /// The ranks on this host (MPI_COMM_TYPE_SHARED), once asked for (MPISharedWindow.swift);
    /// nil inside when they are not all the ranks.
    var host: MPI_Comm?
    var hostChecked = false
    /// Shared windows, freed collectively before MPI_Finalize.
    var windows: [MPISharedWindow] = []

    /// "hosts node0, node1" (or "ranks 0-3 on HOST" when all share one), for the watchdog's message.
    private var peers = ""

    /// Overlap: MPI_Iallreduce, advanced by MPI_Test between layers and completed by polling
    /// against the deadline like every other collective.
    public func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws -> PendingCollective {
        try startAllReduce(UnsafeMutableRawPointer(buffer.baseAddress), buffer.count, lockstep_type_float(), "float", op)
    }
    public func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws -> PendingCollective {
        try startAllReduce(UnsafeMutableRawPointer(buffer.baseAddress), buffer.count, lockstep_type_int64(), "int64", op)
    }
    private func startAllReduce(_ data: UnsafeMutableRawPointer?, _ count: Int, _ type: MPI_Datatype, _ typeName: String, _ op: ReduceOp) throws -> PendingCollective {
        guard count > 0 else { return CompletedCollective() }
        let pending = MPIPending(owner: self, what: "MPI_Iallreduce (\(op)) of \(count) \(typeName) values",
                                 seconds: CollectiveTimeout.seconds(base: collectiveTimeout, payload: count * MemoryLayout<Int64>.size))
        try check(MPI_Iallreduce(lockstep_in_place(), data, Int32(count), type, mpiOp(op), comm, &pending.request), "MPI_Iallreduce")
        return pending
    }

    fileprivate final class MPIPending: PendingCollective {
        unowned let owner: MPICommunicator
        var request = lockstep_request_null()
        var done = false
        /// A chunk-tree exchange's arrays, which MPI reads until the request completes.
        var arguments: ScatterArguments?
        let what: String
        let seconds: Double
        init(owner: MPICommunicator, what: String, seconds: Double) { (self.owner, self.what, self.seconds) = (owner, what, seconds) }
        func test() throws -> Bool {
            if done { return true }
            var flag: Int32 = 0
            try owner.check(MPI_Test(&request, &flag, lockstep_status_ignore()), "MPI_Test")
            done = flag != 0
            if done { arguments?.release() }
            return done
        }
        func wait() throws {
            if done { return }
            try owner.complete(&request, seconds: seconds) { self.what }
            done = true
            arguments?.release()
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        if buffer.isEmpty { return }
        // MPI counts are Int32: send large buffers in chunks.
        let chunk = 1 << 30
        var offset = 0
        while offset < buffer.count {
            let n = min(chunk, buffer.count - offset)
            var request = lockstep_request_null()
            try check(MPI_Ibcast(buffer.baseAddress! + offset, Int32(n), lockstep_type_byte(), Int32(root), comm, &request), "MPI_Ibcast")
            try complete(&request, seconds: CollectiveTimeout.seconds(base: collectiveTimeout, payload: n)) { "MPI_Bcast of \(buffer.count) bytes from rank \(root)" }
            offset += n
        }
    }

    public func barrier() throws {
        var request = lockstep_request_null()
        try check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier")
        try complete(&request, seconds: collectiveTimeout) { "MPI_Barrier" }
    }

    /// MPI_Abort, after leaving the message where the launcher looks (LOCKSTEP_ABORT_NOTE, set by
    /// launch/train): mpirun cannot finish an abort while a host is unreachable, so launch/train
    /// ends it when this note appears and mpirun is still running seconds later. If MPI_Abort
    /// itself cannot return (it talks to the local daemon), SIGALRM ends the process.
    public func abort(_ message: String) {
        fflush(stdout)
        fflush(stderr)
        if let path = ProcessInfo.processInfo.environment["LOCKSTEP_ABORT_NOTE"], !path.isEmpty {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            if fd >= 0 {
                let line = Array("rank \(rank): \(message)\n".utf8)
                _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            }
        }
        alarm(10)
        MPI_Abort(comm, 1)
    }

    fileprivate func mpiOp(_ op: ReduceOp) -> MPI_Op {
        switch op {
        case .sum: return lockstep_op_sum()
        case .max: return lockstep_op_max()
        case .min: return lockstep_op_min()
        }
    }
}
