// The one clock for timings: monotonic seconds (never jumps with the wall clock), and the median
// that timings are quoted by.
import Foundation

public func monotonicSeconds() -> Double { seconds(CLOCK_MONOTONIC) }

/// CPU seconds used by the calling thread, and by the whole process (every thread): with wall
/// time, they tell a step that computed longer from one that waited or was descheduled.
public func threadCPUSeconds() -> Double { seconds(CLOCK_THREAD_CPUTIME_ID) }
public func processCPUSeconds() -> Double { seconds(CLOCK_PROCESS_CPUTIME_ID) }

@inline(__always) private func seconds(_ clock: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// The median of timings (the mean of the two middle values for an even count; 0 for none):
/// what benchmarks quote and what the straggler report compares ranks against.
public func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted(), n = sorted.count
    return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
}
