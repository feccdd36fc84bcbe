// Rank-zero console output: plain lines, a progress bar when stdout is a terminal, and the
// line each epoch ends with.
import Collectives
import Formats
import Foundation
import TensorCore

public final class Console: @unchecked Sendable {
    public let isEnabled: Bool
    public let isTerminal: Bool
    private var barShown = false
    private var lastDraw = 0.0

    /// The bar is drawn when stdout is a terminal and the process was not started by mpirun or
    /// srun (whose output is usually a log file even when it looks like a terminal);
    /// LOCKSTEP_PROGRESS=1 or 0 forces it on or off.
    public init(isEnabled: Bool) {
        self.isEnabled = isEnabled
        let env = ProcessInfo.processInfo.environment
        switch env["LOCKSTEP_PROGRESS"] {
        case "1": isTerminal = true
        case "0": isTerminal = false
        default:
            let launched = LaunchEnvironment.startedByLauncher
            isTerminal = isatty(STDOUT_FILENO) != 0 && !launched
        }
    }

    public func line(_ text: String) {
        guard isEnabled else { return }
        clearBar()
        print(text)
        fflush(stdout)
    }

    /// Redraws a one-line progress bar (terminal only).
    public func progress(_ done: Int, of total: Int, _ suffix: String) {
        guard isEnabled, isTerminal, total > 0 else { return }
        // At most ten redraws a second, and always the last one.
        let t = monotonicSeconds()
        if done < total && t - lastDraw < 0.1 { return }
        lastDraw = t
        let width = 30
        let filled = min(width, done * width / total)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        print("\r\u{1B}[2K\(bar) \(done)/\(total) \(suffix)", terminator: "")
        fflush(stdout)
        barShown = true
    }

    public func clearBar() {
        if barShown { print("\r\u{1B}[2K", terminator: ""); barShown = false }
    }
}

/// Standard error, one line per message, from any rank.
public func printError(_ text: String) {
    FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
}

extension EpochMetrics {
    /// Rank 0's line at the end of an epoch.
    func consoleLine(epochs: Int) -> String {
        let comm = worldSize > 1 ? String(format: "  comm %.1f ms/step", 1000 * communicationSecondsPerStep) : ""
        let validation = validationLoss.map { String(format: "  val loss %.4f acc %.2f%%", $0, 100 * (validationAccuracy ?? 0)) } ?? ""
        return String(format: "epoch %d/%d  train loss %.4f acc %.2f%%", epoch, epochs, trainLoss, 100 * trainAccuracy) + validation
            + String(format: "  test loss %.4f acc %.2f%%  ece %.3f  lr %.5f  %.0f samples/s",
                     testLoss, 100 * testAccuracy, expectedCalibrationError, learningRate, samplesPerSecond)
            + comm + String(format: "  %.1fs", elapsedSeconds)
    }
}
