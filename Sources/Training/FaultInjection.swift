// Faults that tests of the failure path inject through the environment, read once per trainer:
//   LOCKSTEP_FAULT_RANK=r LOCKSTEP_FAULT_STEP=s   rank r throws at step s (0 without a step);
//   LOCKSTEP_FAULT_RANK=r LOCKSTEP_FAULT_PAUSE=CONTEXT [LOCKSTEP_FAULT_PAUSE_FILE=F]
//       rank r, on entering CONTEXT ("step 13", "checkpoint at step 10", "evaluation after
//       step 10"), creates F and sleeps 4 s, so that a test can cut a link exactly there;
//   LOCKSTEP_FAULT_RANK=r LOCKSTEP_FAULT_SLOW=ms   rank r spends ms more per step (a straggler).
// launch/train passes these variables on to every rank.
import Foundation
import TensorCore

struct FaultInjection {
    let failAtStep: Int?
    let pause: (context: String, file: String)?
    let slowSeconds: Double?

    init(_ env: [String: String], rank: Int) {
        let mine = env["LOCKSTEP_FAULT_RANK"].flatMap(Int.init) == rank
        let other = env["LOCKSTEP_FAULT_PAUSE"] != nil || env["LOCKSTEP_FAULT_SLOW"] != nil
        failAtStep = mine && (!other || env["LOCKSTEP_FAULT_STEP"] != nil) ? env["LOCKSTEP_FAULT_STEP"].flatMap(Int.init) ?? 0 : nil
        slowSeconds = mine ? env["LOCKSTEP_FAULT_SLOW"].flatMap(Double.init).map { $0 / 1000 } : nil
        pause = mine ? env["LOCKSTEP_FAULT_PAUSE"].map { ($0, env["LOCKSTEP_FAULT_PAUSE_FILE"] ?? "") } : nil
    }

    func failIfAt(step: Int) throws {
        if let failAtStep, failAtStep == step {
            throw InjectedFault(message: "injected fault at step \(step) (LOCKSTEP_FAULT_RANK/LOCKSTEP_FAULT_STEP)")
        }
    }

    /// A straggler's extra time: spins (compute, not waiting) for the configured time.
    func slowDown() {
        guard let slowSeconds else { return }
        let until = monotonicSeconds() + slowSeconds
        while monotonicSeconds() < until {}
    }

    func pauseIfAt(_ context: String) {
        guard let pause, pause.context == context else { return }
        _ = FileManager.default.createFile(atPath: pause.file, contents: Data(context.utf8))
        sleep(4)
    }
}

/// The error a test's injected fault throws (not a config error: nothing was wrong with the input).
struct InjectedFault: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
