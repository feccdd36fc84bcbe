// The roofline part of `lockstep bench`: this machine's sgemm peak (a large square sgemm on the
// BLAS threads in use) and memory bandwidth (a large copy), measured by the benchmark itself so
// the table holds on any CPU, and each layer's achieved GFLOP/s (GEMM layers) or GB/s (the
// memory-bound rest) against them.
import Foundation
import NN
import TensorCore

public struct Roofline: Sendable {
    public var peakGFLOPs: Double
    public var bandwidthGBs: Double

    /// Best of `repeats` 1024³ sgemms (2 GFLOP each) and of 256 MB copies (read + write).
    public static func measure(repeats: Int = 5) -> Roofline {
        let n = 1024
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        var best = Double.infinity
        for _ in 0..<repeats {
            let t0 = monotonicSeconds()
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                gemm(m: n, n: n, k: n, a: pa.baseAddress!, lda: n, b: pb.baseAddress!, ldb: n, c: pc.baseAddress!, ldc: n)
            } } }
            best = min(best, monotonicSeconds() - t0)
        }
        let count = 64 << 20   // 64 Mi floats, 256 MB: far beyond any cache
        let src = UnsafeMutableBufferPointer<Float>.allocate(capacity: count), dst = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { src.deallocate(); dst.deallocate() }
        src.initialize(repeating: 1)
        dst.initialize(repeating: 0)
        var copy = Double.infinity
        for _ in 0..<max(repeats / 2, 1) {
            let t0 = monotonicSeconds()
            dst.baseAddress!.update(from: src.baseAddress!, count: count)
            copy = min(copy, monotonicSeconds() - t0)
        }
        return Roofline(peakGFLOPs: 2 * pow(Double(n), 3) / best / 1e9, bandwidthGBs: 2 * 4 * Double(count) / copy / 1e9)
    }

    /// Forward work of one sample through `layer`: multiply-add FLOPs for GEMM layers (dense,
    /// conv, and residual blocks holding them), else bytes read and written (4 per element in and
    /// out; a batch norm with a pool fused in counts the separate layers' bytes). Backward is counted as twice the forward (input and weight gradients; for memory-bound
    /// layers: dy and the kept tensor read, dx written: about 3/2 of forward, rounded to 2), and
    /// once for the first trainable layer, which computes no input gradient.
    public static func work(_ layer: Layer) -> (flops: Double, bytes: Double) {
        let elementsIn = Double(layer.inputShape.reduce(1, *)), elementsOut = Double(layer.outputShape.reduce(1, *))
        switch layer.portable {
        case let .dense(w, _)?: return (2 * Double(w.count), 0)
        case let .conv(w, _, _, _, _)?:
            let spatial = Double(layer.outputShape.dropFirst().reduce(1, *))
            return (2 * Double(w.count) * spatial, 0)
        case let .residual(inner, shortcut)?:
            let parts = (inner + shortcut).map(work)
            return (parts.reduce(0) { $0 + $1.flops }, parts.reduce(0) { $0 + $1.bytes })
        case .flatten?: return (0, 0)   // a view: no data moves
        case _ where (layer as? BatchNorm)?.poolsMax == true:
            // With the ReLU and the 2×2 max pool fused in: the bytes the separate batch norm and
            // pool would move (x in and y out, y in and a quarter out), so its rate is effective,
            // as a Winograd convolution's FLOPs are the direct convolution's.
            return (0, 4 * (2 * elementsIn + elementsIn + elementsIn / 4))
        default: return (0, 4 * (elementsIn + elementsOut))
        }
    }

    /// One line per layer: achieved rate forward and backward and its fraction of the roof.
    public func table(layers: [Layer], forward: [Double], backward: [Double], samplesPerStep: Double, stepSeconds: Double,
                      passes: [(name: String, seconds: Double, bytes: Double)] = []) -> [String] {
        var lines = [String(format: "roofline: sgemm peak %.1f GFLOP/s (1024³, %d BLAS thread(s)), copy bandwidth %.1f GB/s (256 MB, main memory; tensors that fit in cache can beat it)", peakGFLOPs, blasThreadCount(), bandwidthGBs),
                     "layer                  bound     forward          backward         share"]
        // The first trainable layer computes no input gradient: its backward is the weight
        // gradient alone, one forward's worth of FLOPs.
        let firstTrainable = layers.firstIndex { !$0.parameters.isEmpty }
        for (i, layer) in layers.enumerated() {
            let w = Self.work(layer)
            let backwardFactor = i == firstTrainable && w.flops > 0 ? 1.0 : 2.0
            let gemmBound = w.flops > 0
            let amount = (gemmBound ? w.flops / 1e9 : w.bytes / 1e9) * samplesPerStep
            let roof = gemmBound ? peakGFLOPs : bandwidthGBs
            func rate(_ seconds: Double, _ factor: Double) -> String {
                guard seconds > 0 else { return "       –        " }
                let r = factor * amount / seconds
                return String(format: "%7.1f %@ %3.0f%%", r, (gemmBound ? "GF/s" : "GB/s") as NSString, 100 * r / roof)
            }
            let name = layer.name.padding(toLength: 22, withPad: " ", startingAt: 0)
            guard w.flops > 0 || w.bytes > 0 else { lines.append(name + " view      (no data movement)"); continue }
            if (layer as? ReLU)?.isFused == true { lines.append(name + " fused     (into the batch norm before it)"); continue }
            if (layer as? MaxPool2D)?.isFused == true { lines.append(name + " fused     (into the batch norm two layers before)"); continue }
            lines.append(name + (gemmBound ? " gemm     " : " memory   ") + rate(forward[i], 1) + "  " + rate(backward[i], backwardFactor)
                         + String(format: "  %5.1f%%", 100 * (forward[i] + backward[i]) / stepSeconds))
        }
        for p in passes where p.seconds > 0 {
            let r = p.bytes / 1e9 / p.seconds
            lines.append(p.name.padding(toLength: 22, withPad: " ", startingAt: 0)
                         + String(format: " memory   %7.1f GB/s %3.0f%%                    %5.1f%%", r, 100 * r / bandwidthGBs, 100 * p.seconds / stepSeconds))
        }
        return lines
    }
}
