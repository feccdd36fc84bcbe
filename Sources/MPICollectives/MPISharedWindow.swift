// MPICommunicator's shared regions (Collectives' SharedMemory.swift): MPI-3 shared windows on the
// ranks of one host. Asked for only when every rank of the job runs on this host; across hosts
// there is none and the callers' messages stay. Each window lives until MPICommunicator.finalize
// frees it (MPI_Win_free is collective; every rank reaches finalize at the end of the job).
import CMPI
import Collectives
import Foundation

final class MPISharedWindow: SharedRegion {
    let floats: Int
    private var window: MPI_Win?
    private let bases: [UnsafeMutablePointer<Float>]
    private unowned let owner: MPICommunicator

    init(floats: Int, window: MPI_Win?, bases: [UnsafeMutablePointer<Float>], owner: MPICommunicator) {
        self.floats = floats
        self.window = window
        self.bases = bases
        self.owner = owner
    }

    func base(_ rank: Int) -> UnsafeMutablePointer<Float> { bases[rank] }

    /// MPI_Win_sync on both sides of a barrier (polled against the collective deadline): the
    /// unified memory model's way of making every rank's stores visible to the others.
    func fence() throws {
        MPI_Win_sync(window)
        try owner.barrier()
        MPI_Win_sync(window)
    }

    func free() {
        if window != nil { _ = lockstep_free_shared_window(&window) }
        window = nil
    }
}

extension MPICommunicator {
    /// The ranks first vote on whether the window fits (a polled all-reduce: the deadline), then
    /// split by host once and allocate the window, both blocking collectives that every rank has
    /// by then reached. OpenMPI backs shared windows with files in /dev/shm, which a container
    /// may cap at 64 MB: a window that would take more than half of its free space is not asked
    /// for (an allocation that failed would end the job), and the caller sends messages instead.
    /// LOCKSTEP_SHARED_MEMORY_LIMIT (bytes) stands in for the free space (tests).
    public func sharedRegion(floats: Int) throws -> SharedRegion? {
        if size == 1 { return nil }
        let bytesPerRank = (max(floats, 1) * 4 + 63) / 64 * 64
        let free = Self.sharedMemoryFree()
        var vote: [Int64] = [Int64(bytesPerRank) * Int64(size) * 2 <= free ? 0 : 1]
        try allReduce(&vote, op: .max)
        if vote[0] != 0 {
            if rank == 0 {
                fputs(String(format: "lockstep: gradients go through MPI messages: a shared window of %.0f MB per rank would not fit in /dev/shm (%.0f MB free)\n",
                             Double(bytesPerRank) / 1e6, Double(free) / 1e6), stderr)
            }
            return nil
        }
        if !hostChecked {
            var split: MPI_Comm? = nil
            try check(lockstep_split_host(lockstep_comm_world(), &split), "MPI_Comm_split_type")
            var n: Int32 = 0
            MPI_Comm_size(split, &n)
            host = Int(n) == size ? split : nil
            hostChecked = true
        }
        guard let local = host else { return nil }
        var window: MPI_Win? = nil
        var raw = [UnsafeMutableRawPointer?](repeating: nil, count: size)
        try check(lockstep_shared_window(local, bytesPerRank, &window, &raw), "MPI_Win_allocate_shared of \(bytesPerRank) bytes per rank")
        let region = MPISharedWindow(floats: floats, window: window, bases: raw.map { $0!.assumingMemoryBound(to: Float.self) }, owner: self)
        windows.append(region)
        return region
    }

    /// Bytes free in /dev/shm (the same on every rank of one host), or the test override.
    static func sharedMemoryFree() -> Int64 {
        if let text = ProcessInfo.processInfo.environment["LOCKSTEP_SHARED_MEMORY_LIMIT"], let limit = Int64(text) { return limit }
        var fs = statvfs()
        guard statvfs("/dev/shm", &fs) == 0 else { return Int64.max / 4 }
        return Int64(fs.f_bavail) * Int64(fs.f_frsize)
    }
}
