// How an MPI collective meets its deadline: polling a request while answering other ranks'
// roll calls, and, when the deadline passes, a roll call on the private control communicator
// that names the ranks (and hosts) that did not answer.
import CMPI
import Collectives
import Foundation
import TensorCore

extension MPICommunicator {
    /// Polls `request` until it completes, answering roll calls meanwhile; after the timeout,
    /// holds a roll call and throws naming the ranks that did not answer.
    func complete(_ request: inout MPI_Request?, seconds: Double, _ what: () -> String) throws {
        let deadline = monotonicSeconds() + seconds
        var polls = 0
        while true {
            var done: Int32 = 0
            try check(MPI_Test(&request, &done, lockstep_status_ignore()), "MPI_Test")
            if done != 0 { return }
            polls += 1
            BackgroundWork.pollHook(polls)
            // Spin while the other ranks are probably close; then yield the core now and then.
            if polls & 1023 == 0 {
                answerRollCalls()
                if monotonicSeconds() > deadline {
                    throw CollectiveError(failedRank: rank, message: CollectiveTimeout.message(what(), context: context, seconds: seconds,
                                                                                               missing: rollCall(), hosts: hosts))
                }
                if polls > 100_000 { usleep(100) }
            }
        }
    }

    /// Answers any roll call (a rank that timed out asks who is still alive).
    func answerRollCalls() {
        var pending: Int32 = 0
        var status = MPI_Status()
        while MPI_Iprobe(lockstep_any_source(), Self.rollCallTag, control, &pending, &status) == lockstep_success() && pending != 0 {
            var asker: Int32 = 0
            MPI_Recv(&asker, 1, lockstep_type_int(), status.MPI_SOURCE, Self.rollCallTag, control, lockstep_status_ignore())
            var me = Int32(rank)
            var req = lockstep_request_null()
            MPI_Isend(&me, 1, lockstep_type_int(), asker, Self.answerTag, control, &req)
            MPI_Request_free(&req)
        }
    }

    /// Asks every other rank to answer within two seconds; returns those that did not.
    func rollCall() -> [Int] {
        var me = Int32(rank)
        for other in 0..<size where other != rank {
            var req = lockstep_request_null()
            MPI_Isend(&me, 1, lockstep_type_int(), Int32(other), Self.rollCallTag, control, &req)
            MPI_Request_free(&req)
        }
        var answered = Set([rank])
        let until = monotonicSeconds() + 2
        while answered.count < size && monotonicSeconds() < until {
            answerRollCalls()   // two ranks may be calling the roll at once
            var pending: Int32 = 0
            var status = MPI_Status()
            MPI_Iprobe(lockstep_any_source(), Self.answerTag, control, &pending, &status)
            if pending != 0 {
                var who: Int32 = 0
                MPI_Recv(&who, 1, lockstep_type_int(), status.MPI_SOURCE, Self.answerTag, control, lockstep_status_ignore())
                answered.insert(Int(who))
            } else {
                usleep(1000)
            }
        }
        return (0..<size).filter { !answered.contains($0) }
    }
}
