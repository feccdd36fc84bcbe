// `lockstep bench-conv`: every convolution of a config timed alone under each algorithm (im2col +
// GEMM, Winograd F(2,3), F(4,3)): forward, input gradient and weight gradient per sample, in
// exact mode's chunk-aligned pieces, interleaved. The measurement behind `conv.algorithm: auto`.
import Foundation
import NN
import TensorCore

public struct ConvTiming {
    public var layer: String
    public var geometry: ConvGeometry
    public var outChannels: Int
    public var algorithm: ConvAlgorithm
    /// Median microseconds per sample.
    public var forward: Double, inputGradient: Double, weightGradient: Double
    public var total: Double { forward + inputGradient + weightGradient }
    /// Direct-convolution FLOPs per sample of one pass.
    public var flops: Double {
        2 * Double(geometry.patchSize * outChannels * geometry.outHeight * geometry.outWidth)
    }
}

/// Every Conv2D among `layers`, residual blocks included, with its name.
public func convolutions(in layers: [Layer]) -> [Conv2D] {
    layers.flatMap { layer -> [Conv2D] in
        if let c = layer as? Conv2D { return [c] }
        if let r = layer as? Residual { return convolutions(in: r.inner + r.shortcut) }
        return []
    }
}

/// Times one layer's geometry under `algorithm` on `batch` samples in chunks of `chunk`; nil if
/// the algorithm does not apply. `rounds` interleaved repetitions, medians per pass.
public func timeConvolution(_ conv: Conv2D, algorithm: ConvAlgorithm, batch: Int, chunk: Int?, rounds: Int) throws -> ConvTiming? {
    let g = conv.geometry
    let layer = try Conv2D(name: conv.name, inputShape: conv.inputShape, outChannels: conv.outputShape[0], kernel: g.kernelH,
                           stride: g.stride, padding: g.padding, bias: conv.bias != nil, algorithm: algorithm,
                           strictAlgorithm: algorithm != .auto)
    let model = Model(layers: [layer], inputShape: conv.inputShape)
    model.initialize(seed: 1)
    let chunking = chunk.map { Chunking(size: $0) } ?? .whole
    if let chunk { model.parameters.useChunkSlots((batch + chunk - 1) / chunk) }
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    func uniform() -> Float {   // xorshift64*: inputs for timing only
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return Float((state &* 0x2545_F491_4F6C_DD1D) >> 40) / Float(1 << 24) * 2 - 1
    }
    let x = Tensor(zeros: [batch] + conv.inputShape), dy = Tensor(zeros: [batch] + conv.outputShape)
    for i in 0..<x.count { x[i] = uniform() }
    for i in 0..<dy.count { dy[i] = uniform() }
    let context = ForwardContext(mode: .training, sampleIndices: Array(0..<batch), chunking: chunking)
    var fwd: [Double] = [], wgrad: [Double] = [], both: [Double] = []
    for _ in 0..<(rounds + 1) {   // the first round warms the caches and allocates
        var t0 = monotonicSeconds()
        _ = try layer.forward(x, context: context)
        fwd.append(monotonicSeconds() - t0)
        t0 = monotonicSeconds()
        _ = try layer.backward(dy, needInputGradient: false)
        wgrad.append(monotonicSeconds() - t0)
        t0 = monotonicSeconds()
        _ = try layer.backward(dy, needInputGradient: true)
        both.append(monotonicSeconds() - t0)
    }
    let perSample = 1e6 / Double(batch)
    let f = median(Array(fwd.dropFirst())) * perSample, w = median(Array(wgrad.dropFirst())) * perSample
    let b = median(Array(both.dropFirst())) * perSample
    return ConvTiming(layer: conv.name, geometry: g, outChannels: conv.outputShape[0], algorithm: algorithm,
                      forward: f, inputGradient: max(b - w, 0), weightGradient: w)
}

/// The table: one row per layer and algorithm, and the algorithm `auto` picks.
public func convBenchmarkReport(_ timings: [[ConvTiming]], auto: [String: Int?]) -> String {
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    var lines = [pad("layer", 18) + pad("in→out, output plane, stride", 32) + pad("algorithm", 12)
                 + " forward  input grad  weight grad  total µs/sample   effective GFLOP/s (fwd / dX / dW)"]
    for rows in timings {
        guard let first = rows.first else { continue }
        let g = first.geometry
        let shape = "\(g.channels)→\(first.outChannels), \(g.outHeight)×\(g.outWidth), s\(g.stride)"
        for (k, t) in rows.enumerated() {
            func rate(_ us: Double) -> String { us > 0 ? String(format: "%5.0f", t.flops / us / 1e3) : "    -" }
            let name = k == 0 ? t.layer : ""
            let picked = (auto[t.layer] ?? nil).map { $0 == 4 ? ConvAlgorithm.winograd : .winogradF2 } ?? .direct
            let figures = String(format: "%8.1f %11.1f %12.1f %16.1f   ", t.forward, t.inputGradient, t.weightGradient, t.total)
            lines.append(pad(name, 18) + pad(k == 0 ? shape : "", 32) + pad(t.algorithm.rawValue, 12) + figures
                         + "\(rate(t.forward)) / \(rate(t.inputGradient)) / \(rate(t.weightGradient))" + (t.algorithm == picked ? "   <- auto" : ""))
        }
    }
    return lines.joined(separator: "\n")
}
