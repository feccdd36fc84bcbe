// Tensor: a shape plus contiguous float32 storage (row-major, NCHW for images).
//
// A tensor is a reference type so that layers can keep and reuse their activation buffers
// across steps: `ensureShape` only reallocates when the element count grows past capacity.
// A tensor may also be a view into memory owned by something else (a parameter arena, or
// another tensor reshaped by Flatten); the owner is retained so the memory stays alive.

public final class Tensor: CustomStringConvertible {
    public private(set) var shape: [Int]
    public private(set) var count: Int
    public private(set) var data: UnsafeMutablePointer<Float>
    private var capacity: Int
    private let ownsMemory: Bool
    private let owner: AnyObject?

    /// A zero-filled tensor that owns its storage.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.capacity = max(count, 1)
        self.data = .allocate(capacity: capacity)
        self.data.initialize(repeating: 0, count: capacity)
        self.ownsMemory = true
        self.owner = nil
    }

    /// A tensor holding a copy of `values`.
    public convenience init(shape: [Int], values: [Float]) {
        self.init(zeros: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// A view of `count(shape)` floats at `pointer`, kept alive by `owner`.
    public init(viewing pointer: UnsafeMutablePointer<Float>, shape: [Int], owner: AnyObject?) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.capacity = count
        self.data = pointer
        self.ownsMemory = false
        self.owner = owner
    }

    /// The same storage seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(viewing: data, shape: newShape, owner: self)
    }

    deinit {
        if ownsMemory { data.deallocate() }
    }

    /// Changes the shape, reallocating only when the new element count exceeds capacity.
    /// Contents are unspecified afterwards.
    public func ensureShape(_ newShape: [Int]) {
        let n = newShape.reduce(1, *)
        if n > capacity {
            precondition(ownsMemory, "cannot grow a view")
            data.deallocate()
            capacity = n
            data = .allocate(capacity: n)
            data.initialize(repeating: 0, count: n)
        }
        shape = newShape
        count = n
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }
    public var array: [Float] { Array(buffer) }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }
    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    public var description: String { "Tensor\(shape)" }
}

/// A cached buffer: returns the same tensor while the shape is unchanged (see `Tensor.ensureShape`).
@inline(__always)
public func reuse(_ slot: inout Tensor?, _ shape: [Int]) -> Tensor {
    if let t = slot {
        if t.shape != shape { t.ensureShape(shape) }
        return t
    }
    let t = Tensor(zeros: shape)
    slot = t
    return t
}
