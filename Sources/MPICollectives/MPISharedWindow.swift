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
    /// The ranks meet at a polled barrier first (the deadline), then split by host once and
    /// allocate the window, both blocking collectives that every rank has by then reached.
    public func sharedRegion(floats: Int) throws -> SharedRegion? {
        if size == 1 { return nil }
        try barrier()
        if !hostChecked {
            var split: MPI_Comm? = nil
            try check(lockstep_split_host(lockstep_comm_world(), &split), "MPI_Comm_split_type")
            var n: Int32 = 0
            MPI_Comm_size(split, &n)
            host = Int(n) == size ? split : nil
            hostChecked = true
        }
        guard let local = host else { return nil }
        let bytes = (max(floats, 1) * 4 + 63) / 64 * 64
        var window: MPI_Win? = nil
        var raw = [UnsafeMutableRawPointer?](repeating: nil, count: size)
        try check(lockstep_shared_window(local, bytes, &window, &raw), "MPI_Win_allocate_shared of \(bytes) bytes per rank")
        let region = MPISharedWindow(floats: floats, window: window, bases: raw.map { $0!.assumingMemoryBound(to: Float.self) }, owner: self)
        windows.append(region)
        return region
    }
}
