// Memory shared by the ranks of one host: a region every rank reads and writes directly, so that
// a reduction among them needs no copy through MPI (exact mode's one-host gradient reduction,
// Training's ExactGradients.swift). MPICommunicator makes one from an MPI-3 shared window when
// every rank runs on one host; ThreadCommunicator from its threads' own memory. Elsewhere (ranks
// on several hosts, one process) there is none: `sharedRegion` returns nil and callers send
// messages as before.

/// `floats` floats per rank, rank r's at `base(r)`, which every rank of the group may read and
/// write. Who writes what, and when, is the caller's protocol: `fence` orders it.
public protocol SharedRegion: AnyObject {
    var floats: Int { get }
    /// Rank r's part.
    func base(_ rank: Int) -> UnsafeMutablePointer<Float>
    /// Every rank meets here, within the collective deadline (an error names the ranks that did
    /// not arrive); what any rank wrote before it is visible to every rank after it.
    func fence() throws
}

/// The thread ranks' region: each rank's part is its own allocation, published to the others;
/// the group frees them all when the threads are done (ThreadGroup.deinit).
final class ThreadSharedRegion: SharedRegion {
    let floats: Int
    private let bases: [UnsafeMutablePointer<Float>]
    private let communicator: ThreadCommunicator

    init(floats: Int, bases: [UnsafeMutablePointer<Float>], communicator: ThreadCommunicator) {
        self.floats = floats
        self.bases = bases
        self.communicator = communicator
    }

    func base(_ rank: Int) -> UnsafeMutablePointer<Float> { bases[rank] }

    /// The group's barrier takes a lock every rank also takes, so it orders memory too.
    func fence() throws { try communicator.barrier() }
}
