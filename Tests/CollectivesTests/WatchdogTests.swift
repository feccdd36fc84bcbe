// The watchdog that guards MPI's blocking transfers (Collectives/Watchdog.swift): it reports a
// call that outlives its deadline, with the call's description, and stays quiet for calls that
// return in time; and the deadline of a collective grows with the bytes it moves.
import Collectives
import Foundation
import XCTest

final class WatchdogTests: XCTestCase {
    func testReportsOnlyACallThatOutlivesItsDeadline() {
        let fired = expectation(description: "expired")
        let lock = NSLock()
        var messages: [String] = []
        let dog = Watchdog { text in
            lock.lock(); messages.append(text); lock.unlock()
            fired.fulfill()
        }
        // Returns well within its deadline (the thread looks four times a second).
        dog.guarding(seconds: 2, { "quick call" }) { usleep(50_000) }
        usleep(600_000)
        lock.lock(); XCTAssertEqual(messages, [], "a call that returned in time is not reported"); lock.unlock()
        // Stalls past its deadline: reported while it is still running.
        let start = Watchdog.now()
        dog.guarding(seconds: 0.3, { "stalled call" }) {
            while Watchdog.now() - start < 3 {
                lock.lock(); let done = !messages.isEmpty; lock.unlock()
                if done { break }
                usleep(10_000)
            }
        }
        wait(for: [fired], timeout: 5)
        lock.lock(); XCTAssertEqual(messages, ["stalled call"]); lock.unlock()
        XCTAssertLessThan(Watchdog.now() - start, 1.5, "reported within a period or two of the deadline")
    }

    func testTheDeadlineScalesWithTheBytesMoved() {
        XCTAssertEqual(CollectiveTimeout.seconds(base: 300, payload: 0), 300)
        // 2.7 MB of gradients: twice the payload over 10 MB/s adds 0.54 s.
        XCTAssertEqual(CollectiveTimeout.seconds(base: 15, payload: 2_700_000), 15.54, accuracy: 1e-9)   // Double rounding of the division
        XCTAssertEqual(CollectiveTimeout.seconds(base: 300, payload: 1_000_000_000), 500, accuracy: 1e-9)   // Double rounding of the division
        let text = CollectiveTimeout.message("MPI_Bcast of 8 bytes from rank 0", context: "step 7", seconds: 15.54, missing: [1], hosts: ["node0", "node1"])
        XCTAssertTrue(text.hasPrefix("MPI_Bcast of 8 bytes from rank 0 at step 7 timed out after 15.5 s: rank 1 (node1) did not arrive"), text)
    }
}
