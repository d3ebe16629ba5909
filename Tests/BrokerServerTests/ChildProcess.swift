import Foundation
import Locking

/// A child process the tests start with posix_spawn: brokerd, brokerctl, brokersoak, openssl.
///
/// Not Foundation's `Process`: on Linux `Process.run()` finds the highest open descriptor by listing /proc/self/fd
/// and copies 256 bytes of each entry's name, reading past the end of the directory buffer (see .asan-suppressions;
/// swift-corelibs-foundation PR #5472). With many descriptors open in a parallel test run that read can cross into an
/// unmapped page and crash the whole test process: seen on 2026-12-02 (two TLS tests making certificates at once)
/// and on 2026-12-04 (a brokerctl test, `make test`, with about 1,500 descriptors open).
///
/// The child's stdout and stderr go to one pipe (`launch`) or to two (`run`); its stdin is /dev/null unless `run` is
/// given input. The pipes are close-on-exec in this process, so children other tests spawn at the same moment do not
/// inherit them (pipe2 is not imported into Swift: a child that slips in between the pipe and the fcntl keeps a
/// write end only until it exits, which delays an EOF, nothing more).
final class ChildProcess: Sendable {
    let pid: pid_t
    /// Everything the child wrote to stdout and stderr so far (`launch`).
    let output: OutputBuffer
    private let exit = Locked<Int32?>(nil)
    private let drained = DispatchSemaphore(value: 0)

    private init(pid: pid_t, output: OutputBuffer) {
        self.pid = pid
        self.output = output
    }

    struct SpawnError: Error, CustomStringConvertible {
        var message: String
        var description: String { self.message }
    }

    /// Starts `path` with `arguments`; its stdout and stderr are collected together into `output` by a thread of
    /// its own as they come.
    static func launch(_ path: String, _ arguments: [String]) throws -> ChildProcess {
        let out = try Self.makePipe()
        let pid: pid_t
        do {
            pid = try Self.spawn(path, arguments, environment: nil, stdin: nil, stdout: out.write, stderr: out.write)
        } catch {
            close(out.read)
            close(out.write)
            throw error
        }
        close(out.write)
        let child = ChildProcess(pid: pid, output: OutputBuffer())
        let reader = out.read
        Thread.detachNewThread {
            Self.readAll(reader) { child.output.append(Data($0)) }
            close(reader)
            child.drained.signal()
        }
        return child
    }

    /// Runs `path` with `arguments` to its end: writes `input` to its stdin, and returns its exit status, its stdout
    /// and its stderr (read side by side, so a child that fills one pipe while the other is read cannot stall).
    /// `environment` nil: this process's.
    static func run(
        _ path: String, _ arguments: [String], environment: [String: String]? = nil, input: String? = nil
    ) throws -> (status: Int32, out: String, err: String) {
        let out = try Self.makePipe()
        let err = try Self.makePipe()
        let inPipe = input == nil ? nil : try Self.makePipe()
        let pid: pid_t
        do {
            pid = try Self.spawn(
                path, arguments, environment: environment, stdin: inPipe?.read, stdout: out.write, stderr: err.write
            )
        } catch {
            for fd in [out.read, out.write, err.read, err.write, inPipe?.read, inPipe?.write].compactMap({ $0 }) {
                close(fd)
            }
            throw error
        }
        close(out.write)
        close(err.write)
        if let inPipe, let input {
            close(inPipe.read)
            let bytes = Array(input.utf8)
            var written = 0
            while written < bytes.count {
                let count = bytes[written...].withUnsafeBytes { write(inPipe.write, $0.baseAddress, $0.count) }
                if count > 0 {
                    written += count
                } else if count < 0 && errno != EINTR {
                    break  // the child closed its stdin: what it read is what it gets
                }
            }
            close(inPipe.write)
        }
        let errors = Locked<[UInt8]>([])
        let errorsDone = DispatchSemaphore(value: 0)
        let errReader = err.read
        Thread.detachNewThread {
            Self.readAll(errReader) { chunk in errors.withLock { $0 += chunk } }
            errorsDone.signal()
        }
        var output: [UInt8] = []
        Self.readAll(out.read) { output += $0 }
        errorsDone.wait()
        close(out.read)
        close(err.read)
        let status = Self.wait(pid, options: 0) ?? -1
        return (status, String(decoding: output, as: UTF8.self), String(decoding: errors.withLock { $0 }, as: UTF8.self))
    }

    /// Whether the child has not exited yet (reaps it when it has).
    var isRunning: Bool { self.poll() == nil }

    /// The exit status (128 + the signal for a child a signal ended); nil while it runs.
    func poll() -> Int32? {
        self.exit.withLock { status in
            if status == nil { status = Self.wait(self.pid, options: WNOHANG) }
            return status
        }
    }

    /// Blocks until the child exits; its exit status.
    func waitUntilExit() -> Int32 {
        self.exit.withLock { status in
            if status == nil { status = Self.wait(self.pid, options: 0) ?? -1 }
            return status!
        }
    }

    /// Sends `signal` (if the child has not been reaped: its pid may be another process's by then).
    func signal(_ signal: Int32) {
        self.exit.withLock { status in
            if status == nil { _ = kill(self.pid, signal) }
        }
    }

    /// Waits (at most `timeout`) until the reader has everything the child wrote: its output pipe reached EOF.
    func waitForOutput(timeout: DispatchTime = .now() + 30) -> Bool {
        guard self.drained.wait(timeout: timeout) == .success else { return false }
        self.drained.signal()  // later callers pass too
        return true
    }

    // MARK: posix_spawn

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SpawnError(message: "pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return (fds[0], fds[1])
    }

    private static func spawn(
        _ path: String, _ arguments: [String], environment: [String: String]?, stdin: Int32?, stdout: Int32,
        stderr: Int32
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { for pointer in envp ?? [] { free(pointer) } }
        var pid: pid_t = 0
        let spawned = envp.map { envp in posix_spawn(&pid, path, &actions, nil, argv, envp) }
            ?? posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard spawned == 0 else {
            throw SpawnError(message: "posix_spawn \(path): \(String(cString: strerror(spawned)))")
        }
        return pid
    }

    /// Reads `fd` to EOF, handing each chunk to `body`.
    private static func readAll(_ fd: Int32, _ body: ([UInt8]) -> Void) {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                body(Array(chunk[0..<count]))
            } else if count == 0 || errno != EINTR {
                return
            }
        }
    }

    /// waitpid: the exit status (128 + the signal for a child a signal ended), or nil while it runs (WNOHANG).
    private static func wait(_ pid: pid_t, options: Int32) -> Int32? {
        var status: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(pid, &status, options) } while result == -1 && errno == EINTR
        guard result == pid else { return result == 0 ? nil : -1 }
        // WEXITSTATUS / WIFEXITED are macros Swift does not import.
        return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }
}

/// Collects a child process's output from its reader thread.
final class OutputBuffer: Sendable {
    private let storage = Locked("")
    var text: String { self.storage.withLock { $0 } }
    func append(_ data: Data) {
        self.storage.withLock { $0 += String(decoding: data, as: UTF8.self) }
    }
}
