// How a Lockstep process becomes ranks and how it ends: the communicator (MPI under mpirun or
// srun, threads with --simulate-ranks, one process otherwise) and the exit status for each way
// a job ends. The command line and the tests both go through here.
import Collectives
import Foundation
import MPICollectives
import TensorCore
import Training

public enum Launcher {
    /// How long a failing rank other than 0 waits before ending the job itself.
    static let abortGraceMicroseconds: UInt32 = 1_500_000

    public enum Backend: Equatable, Sendable {
        case mpi
        case threads(Int)
        case single
    }

    /// The backend for this process: MPI when a launcher started it, otherwise `simulateRanks`
    /// threads, otherwise one process.
    public static func backend(simulateRanks: Int?) -> Backend {
        if MPICommunicator.launchedByMPI { return .mpi }
        if let n = simulateRanks { return .threads(n) }
        return .single
    }

    /// The one line a failing rank prints: `rank R: message`, naming the rank where it happened.
    public static func line(rank: Int?, _ error: Error) -> String {
        switch error {
        case let e as RankError: return "\(e)"
        case let e as CollectiveError where rank == nil || e.failedRank == rank: return "rank \(e.failedRank): \(e.message)"
        default: return "rank \(rank.map(String.init) ?? "?"): \(error)"
        }
    }

    /// 0 for success, 75 (EX_TEMPFAIL) for a preempted run that checkpointed, 1 for any error.
    public static func exitStatus(for error: Error?) -> Int32 {
        guard let error else { return 0 }
        return error is Preempted ? Preempted.exitCode : 1
    }

    /// Runs `body` once per rank and returns the process's exit status. Any rank's error prints
    /// `rank R: message` on standard error and ends every rank: under MPI through MPI_Abort (which
    /// does not return), with threads by waking every rank waiting in a collective.
    public static func run(simulateRanks: Int?, _ body: @escaping (Communicator) throws -> Void) -> Int32 {
        switch backend(simulateRanks: simulateRanks) {
        case .mpi:
            let comm = MPICommunicator()
            do {
                try body(comm)
            } catch let p as Preempted {
                comm.finalize()
                return exitStatus(for: p)
            } catch {
                // When every rank fails alike (a missing file, a bad key) simultaneous MPI_Aborts
                // garble OpenMPI's own messages (ORTE_ERROR_LOG): rank 0 aborts at once, the
                // others after a grace period in which rank 0's abort, if any, ends them first.
                if comm.rank != 0 { usleep(Self.abortGraceMicroseconds) }
                printError(line(rank: comm.rank, error))
                comm.abort("\(error)")
            }
            comm.finalize()
            return 0
        case .single:
            do {
                try body(SingleProcessCommunicator())
                return 0
            } catch {
                if !(error is Preempted) { printError(line(rank: 0, error)) }
                return exitStatus(for: error)
            }
        case .threads(let n):
            if ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
                setBLASThreadCount(max(1, ProcessInfo.processInfo.activeProcessorCount / n))
            }
            do {
                _ = try ThreadCommunicator.run(size: n) { comm in
                    do { try body(comm) } catch let e as RankError { throw e } catch let e as CollectiveError { throw e } catch let e as Preempted { throw e } catch {
                        throw RankError(rank: comm.rank, underlying: error)
                    }
                }
                return 0
            } catch {
                if !(error is Preempted) { printError(line(rank: nil, error)) }
                return exitStatus(for: error)
            }
        }
    }
}

/// An error of one thread rank, named by its rank.
public struct RankError: Error, CustomStringConvertible {
    public let rank: Int
    public let underlying: Error
    public var description: String { "rank \(rank): \(underlying)" }
}
