import NIOCore

/// The property the `FuzzBatch` libFuzzer harness checks, here so that the regression test replaying the committed
/// corpus (LogStoreTests) runs exactly the same code.
package enum BatchCodecCheck {
    /// What the check found wrong: a crash-free decoder that still broke the contract.
    package struct Violation: Error, CustomStringConvertible {
        package var description: String
    }

    /// Feeds `bytes`, read as a run of stored batches (a segment file), to the batch decoder. Each batch is decoded
    /// as it is (a CRC mismatch must be reported, never served) and again with its CRC recomputed, so that arbitrary
    /// headers, compressed bodies and records reach the decoder past the checksum. A batch that decodes must
    /// re-encode to a batch that decodes to the same records. Decoding errors are expected; a violation is thrown,
    /// and a crash is a bug.
    package static func check(_ bytes: [UInt8]) throws(Violation) {
        var input = ByteBuffer(bytes: bytes)
        while let header = BatchHeader.peek(input), header.structuralProblem == nil {
            let length = min(header.totalSize, input.readableBytes)
            guard var batch = input.readSlice(length: length) else { return }
            let asStored = try? BatchCodec.decode(batch)
            guard batch.readableBytes >= BatchFormat.headerSize else { return }
            let crc = batch.withUnsafeReadableBytes { raw in
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[BatchFormat.crcCoverageStart...]))
            }
            if asStored != nil, crc != header.crc {
                throw Violation(description: "a batch whose CRC does not match was decoded")
            }
            batch.setInteger(crc, at: batch.readerIndex + BatchFormat.crcPosition)
            guard let (decodedHeader, records) = try? BatchCodec.decode(batch), let codec = decodedHeader.codec else {
                continue
            }
            let again: ByteBuffer
            do {
                again = try BatchCodec.encode(records, baseOffset: decodedHeader.baseOffset, codec: codec)
            } catch {
                // Records decoded from a batch whose header claims more than the encoder allows (e.g. a body limit).
                continue
            }
            guard let (_, roundTripped) = try? BatchCodec.decode(again) else {
                throw Violation(description: "re-encoded batch of \(records.count) records does not decode")
            }
            if roundTripped != records {
                throw Violation(description: "round trip changed the records of the batch at \(decodedHeader.baseOffset)")
            }
        }
    }
}
