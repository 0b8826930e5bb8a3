import Foundation
import Formats
import TensorBoard

/// The run's TensorBoard event file: one per run directory, directly in it, so that
/// `tensorboard --logdir runs` lists each run under its directory's name. Step = epoch.
extension RunDirectory {
    /// TensorBoard reads every file whose name contains "tfevents"; one fixed name lets a resumed
    /// run and --overwrite find it.
    static let eventFile = "events.out.tfevents.unet-dist"

    /// Each scalar's tag and the history column it carries (TensorBoard groups tags by the part
    /// before the slash).
    static let scalarTags: [(tag: String, value: KeyPath<EpochRecord, Double>)] = [
        ("train/loss", \.loss), ("train/iou", \.iou), ("train/lr", \.lr), ("train/images_per_s", \.imagesPerSecond),
        ("test/loss", \.testLoss), ("test/iou", \.testIoU), ("test/iou_wm", \.testIoUWM), ("test/iou_gm", \.testIoUGM),
        ("test/dice", \.dice),
    ]
    static let sampleTag = "samples/image_truth_prediction"

    var events: EventFile { EventFile(path: path + "/" + Self.eventFile) }

    /// Before the first epoch: the file keeps the epochs already done (a resumed run's) and loses
    /// any later ones, which this run trains again.
    func startEvents(completedEpochs: Int) throws {
        try events.start(keepingStepsThrough: completedEpochs)
    }

    /// One epoch's scalars and sample picture.
    func appendEvents(_ r: EpochRecord, samples: RGBImage?, png: Data?) throws {
        var images: [EventImage] = []
        if let samples, let png {
            images.append(EventImage(tag: Self.sampleTag, width: samples.width, height: samples.height, png: png))
        }
        try events.append(step: r.epoch, scalars: Self.scalarTags.map { ($0.tag, r[keyPath: $0.value]) },
                          images: images)
    }
}
