// The training and test splits of a config, loaded once per process.
import Datasets
import Foundation

/// The training and test splits, loaded once per process and shared by simulated ranks.
public struct TrainingData: @unchecked Sendable {
    public let train: ImageDataset
    public let test: ImageDataset
    /// The value a black (zero) pixel has after normalisation: used to pad random crops.
    public let padValue: Float

    public init(train: ImageDataset, test: ImageDataset, padValue: Float) {
        self.train = train
        self.test = test
        self.padValue = padValue
    }

    public static func load(_ config: TrainingConfig) throws -> TrainingData {
        let dir = config.data.path
        let trainImages = try ImageDataset.findFile(dir, "\(config.data.trainSplit)-images-idx3-ubyte")
        let trainLabels = try ImageDataset.findFile(dir, "\(config.data.trainSplit)-labels-idx1-ubyte")
        let testImages = try ImageDataset.findFile(dir, "\(config.data.testSplit)-images-idx3-ubyte")
        let testLabels = try ImageDataset.findFile(dir, "\(config.data.testSplit)-labels-idx1-ubyte")
        // Without data.normalize, the statistics come from the training split (identical on
        // every rank) and the test split is normalised with them.
        let train = try ImageDataset.load(imagesPath: trainImages, labelsPath: trainLabels, name: "train",
                                          classes: config.data.classes, mean: config.data.mean.map(Float.init),
                                          std: config.data.std.map(Float.init))
        let mean = train.mean!, std = train.std!
        let test = try ImageDataset.load(imagesPath: testImages, labelsPath: testLabels, name: "test",
                                         classes: config.data.classes, mean: mean, std: std)
        guard train.sampleShape == test.sampleShape else {
            throw DataError("\(testImages): test images are \(test.sampleShape), training images \(train.sampleShape)")
        }
        return TrainingData(train: train, test: test, padValue: (0 - mean) / std)
    }
}
