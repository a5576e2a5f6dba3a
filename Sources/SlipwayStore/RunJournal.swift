import CSlipwaySQLite
import CSlipwaySystem
import Foundation
import GRDB
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The run store's hot path on SQLite. A turn of the engine (the jobs that finished, the attempts and steps
/// that start) is appended to a file of this process as one checksummed record, written before the engine
/// acts on it, and applied to the tables later in batches, off the engine's thread. That is one `write(2)`
/// per turn instead of a SQLite transaction of ~10 WAL frames, and it keeps issue 2's guarantees:
/// - durable: the record is in the page cache when `commit` returns, as a WAL frame with
///   `synchronous = NORMAL` is, so it survives `kill -9` of the process;
/// - one view: every read and every other write of the store (in any process) first applies the journals
///   it finds, in the same transaction, so no reader sees the tables behind the journal;
/// - exactly once: how far each journal file has been applied is a row (`run_journal_fold`) committed in the
///   same transaction as what was applied; a record cut short by a crash fails its checksum and is left out.
/// Attempt and step ids are handed out from blocks reserved in `sqlite_sequence`, so the engine knows them at
/// once and no other writer can take them.
final class RunJournal: Sendable {
    /// `<database>.journal`: one `<pid>-<random>.log` per process that wrote, each held with `flock` by its
    /// writer while it lives, which is how a reader tells a live journal from one a dead process left.
    let directory: String
    let database: SQLiteDatabase
    private let own: Mutex<Own>
    /// How far this process knows each other process's journal to be applied.
    private let foreign = Mutex<[String: Int64]>([:])
    private let folder: Mutex<Folder?> = Mutex(nil)
    /// Records that wait before the folder applies them at once rather than after `foldDelay`.
    static let foldBatch = 256
    let foldDelay: DispatchTimeInterval
    static let idBlock: Int64 = 1024

    struct Own {
        let name: String
        var file: Int32 = -1
        var reader: Int32 = -1
        /// Bytes of whole records written, and how many of them are applied.
        var appended: Int64 = 0
        var folded: Int64 = 0
        var unfoldedRecords = 0
        /// Set when the file could not be written or repaired, or the journal is closing: commits then go to
        /// the tables directly.
        var broken = false
        var closing = false
        var attemptIDs: Range<Int64> = 0..<0
        var stepIDs: Range<Int64> = 0..<0
    }

    init(database: SQLiteDatabase, foldDelay: DispatchTimeInterval = .milliseconds(100)) {
        self.database = database
        self.foldDelay = foldDelay
        directory = database.path + ".journal"
        own = Mutex(Own(name: "\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).log"))
    }

    /// Records of this process not applied yet, as the folder counts them.
    var pendingRecords: Int { own.withLock { $0.unfoldedRecords } }

    // MARK: Appending

    enum Appended {
        case done([AttemptStart], StepRecord?)
        /// The journal cannot take writes: write them to the tables.
        case unavailable
    }

    /// Records `writes`, then `step` as inserted, with ids assigned, in one record.
    func append(_ writes: [RunWrite], step: StepRecord?) throws(StoreError) -> Appended {
        var attemptsNeeded: Int64 = 0
        var stepsNeeded: Int64 = step == nil ? 0 : 1
        for write in writes {
            if case .startAttempt(_, _, _, let firstStep) = write {
                attemptsNeeded += 1
                if firstStep != nil { stepsNeeded += 1 }
            }
        }
        for _ in 0..<3 {
            enum Outcome { case appended(Appended, signal: Bool), needIDs(attempts: Bool, steps: Bool) }
            let outcome = own.withLock { own -> Outcome in
                if own.broken { return .appended(.unavailable, signal: false) }
                let attemptsShort = own.attemptIDs.count < attemptsNeeded, stepsShort = own.stepIDs.count < stepsNeeded
                if attemptsShort || stepsShort { return .needIDs(attempts: attemptsShort, steps: stepsShort) }
                var journal: [JournalWrite] = []
                journal.reserveCapacity(writes.count * 2 + 1)
                var started: [AttemptStart] = []
                for write in writes {
                    switch write {
                    case .updateStep(let step): journal.append(.updateStep(step))
                    case .updateAttempt(let attempt): journal.append(.updateAttempt(attempt))
                    case .updateJob(let job, let event):
                        journal.append(.updateJob(job))
                        if let event { journal.append(.appendEvent(event)) }
                    case .startAttempt(let job, let event, let number, let firstStep):
                        journal.append(.updateJob(job))
                        journal.append(.appendEvent(event))
                        let attempt = AttemptRecord(id: own.attemptIDs.popFirst()!, jobRowID: job.id, number: number)
                        journal.append(.insertAttempt(attempt))
                        var step = firstStep
                        if var row = step {
                            row.attemptID = attempt.id
                            row.id = own.stepIDs.popFirst()!
                            journal.append(.insertStep(row))
                            step = row
                        }
                        started.append(AttemptStart(attempt: attempt, firstStep: step))
                    case .appendEvent(let event): journal.append(.appendEvent(event))
                    }
                }
                var inserted = step
                if var row = inserted {
                    row.id = own.stepIDs.popFirst()!
                    journal.append(.insertStep(row))
                    inserted = row
                }
                // A record too large for the format goes to the tables itself; a journal that cannot be written
                // is left for the tables. The writes are durable either way.
                guard let record = RunJournalCodec.record(journal) else { return .appended(.unavailable, signal: false) }
                guard Self.write(record, to: &own, directory: directory) else { return .appended(.unavailable, signal: false) }
                own.unfoldedRecords += 1
                return .appended(.done(started, inserted), signal: own.unfoldedRecords == 1 || own.unfoldedRecords == Self.foldBatch)
            }
            switch outcome {
            case .appended(let appended, let signal):
                if signal { wakeFolder() }
                return appended
            case .needIDs(let attempts, let steps):
                let reserved = try database.write { (db) throws(StoreError) in
                    (attempts ? try Self.reserve("attempt", max(Self.idBlock, attemptsNeeded), in: db) : nil,
                     steps ? try Self.reserve("step", max(Self.idBlock, stepsNeeded), in: db) : nil)
                }
                own.withLock { own in
                    if let ids = reserved.0 { own.attemptIDs = ids }
                    if let ids = reserved.1 { own.stepIDs = ids }
                }
            }
        }
        throw StoreError("could not reserve ids for the run journal")
    }

    /// Writes one record whole, opening the file on first use. A record that cannot be written is cut back
    /// off the file, so the records before it stay readable, and the journal takes no more.
    private static func write(_ record: [UInt8], to own: inout Own, directory: String) -> Bool {
        if own.file < 0 {
            let path = directory + "/" + own.name
            // Readable as the database file is (0644 under the usual umask): the journal holds what the tables
            // will, masked the same way, and any process that reads the tables must read it too.
            guard mkdir(directory, 0o755) == 0 || errno == EEXIST,
                  case let file = open(path + ".new", O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644), file >= 0 else {
                own.broken = true
                return false
            }
            // Held while this process lives: a reader that gets it knows the writer is gone. The file takes its
            // name only once locked, so no reader ever finds it unlocked while its writer lives.
            let reader = open(path + ".new", O_RDONLY | O_CLOEXEC)
            guard reader >= 0, flock(file, LOCK_EX) == 0, rename(path + ".new", path) == 0 else {
                unlink(path + ".new")
                Glibc.close(file)
                if reader >= 0 { Glibc.close(reader) }
                own.broken = true
                return false
            }
            own.file = file
            own.reader = reader
        }
        var written = 0
        let failed = record.withUnsafeBytes { buffer in
            while written < buffer.count {
                let n = Glibc.write(own.file, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return true
                }
                written += n
            }
            return false
        }
        guard !failed else {
            _ = ftruncate(own.file, off_t(own.appended))
            own.broken = true
            return false
        }
        own.appended += Int64(record.count)
        return true
    }

    /// Takes `count` ids of `table` for this process: new rows of any writer get ids above them.
    static func reserve(_ table: String, _ count: Int64, in db: any SQLConnection) throws(StoreError) -> Range<Int64> {
        let sequence: Int64 = try db.queryOne("SELECT seq FROM sqlite_sequence WHERE name = ?", [table])?["seq"] ?? 0
        let highest: Int64 = try db.queryOne("SELECT MAX(id) AS m FROM \(table)")?["m"] ?? 0
        let first = max(sequence, highest) + 1
        let last = first + count - 1
        if try db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", [last, table]) == 0 {
            try db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", [table, last])
        }
        return first..<(last + 1)
    }

    // MARK: Folding

    /// What a fold did, applied to this object's bookkeeping once its transaction committed.
    struct Folded {
        var own: (offset: Int64, records: Int)?
        var foreign: [String: Int64] = [:]
        var finished: [String] = []
    }

    /// Whether some journal (this process's or another's) holds records the tables do not have yet.
    func mayHavePending() -> Bool {
        let (name, ownPending) = own.withLock { ($0.name, $0.appended > $0.folded) }
        if ownPending { return true }
        let known = foreign.withLock { $0 }
        // A directory that cannot be read counts as pending: the fold then says why.
        guard let entries = try? Self.entries(of: directory) else { return true }
        for entry in entries.journals where entry != name {
            var info = stat()
            guard stat(directory + "/" + entry, &info) == 0 else { if errno == ENOENT { continue } else { return true } }
            if Int64(info.st_size) > (known[entry] ?? -1) { return true }
        }
        return !entries.abandoned.isEmpty
    }

    /// Applies every journal's whole records not applied yet, in `db`'s transaction. Files left by dead
    /// processes that are applied to the end are removed after the commit (`committed`).
    func fold(in db: any SQLConnection) throws(StoreError) -> Folded {
        var folded = Folded()
        var offsets: [String: Int64] = [:]
        for row in try db.query("SELECT name, applied FROM run_journal_fold", []) {
            offsets[try row.get("name")] = try row.get("applied")
        }
        let (ownName, ownReader) = own.withLock { ($0.name, $0.reader) }
        let entries = try Self.entries(of: directory)
        for entry in entries.journals {
            let isOwn = entry == ownName
            let path = directory + "/" + entry
            let file = isOwn ? ownReader : open(path, O_RDONLY | O_CLOEXEC)
            guard file >= 0 else {
                if errno == ENOENT { continue }  // removed by another reader since the listing
                throw StoreError("cannot read the run journal \(path): \(String(cString: strerror(errno)))")
            }
            defer { if !isOwn { Glibc.close(file) } }
            // A writer holds its lock while it lives; getting it means no more records will come.
            let finished = !isOwn && flock(file, LOCK_EX | LOCK_NB) == 0
            let start = offsets[entry] ?? 0
            var info = stat()
            guard fstat(file, &info) == 0 else { throw StoreError("cannot read the run journal \(path): \(String(cString: strerror(errno)))") }
            let size = Int64(info.st_size)
            var end = start
            var records = 0
            if size > start {
                let bytes = try Self.read(file, from: start, count: Int(size - start), entry: entry)
                let parsed: (records: [[JournalWrite]], length: Int, damaged: Bool)
                switch RunJournalCodec.records(in: bytes) {
                case .success(let result): parsed = result
                case .failure(.newerVersion(let version)):
                    throw StoreError("the run journal \(path) was written by a newer slipway (format \(version)); open this database with that version")
                case .failure(.damaged):
                    throw StoreError("the run journal \(path) is damaged after byte \(start); move it aside to open the database")
                }
                // Damage is a disk's doing, never a crash's: a write cut short leaves a short record, or (after a
                // power loss) zeros. Zeros to the end of a dead writer's file are such a tail; anything else stops here.
                if parsed.damaged && !(finished && bytes[parsed.length...].allSatisfy { $0 == 0 }) {
                    throw StoreError("the run journal \(path) is damaged at byte \(start + Int64(parsed.length)); move it aside to open the database")
                }
                try Self.apply(parsed.records, in: db)
                records = parsed.records.count
                end = start + Int64(parsed.length)
                if end != start {
                    try db.execute("INSERT INTO run_journal_fold (name, applied) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET applied = excluded.applied",
                                   [entry, end])
                }
            }
            if isOwn {
                folded.own = (end, records)
            } else {
                folded.foreign[entry] = end
                // A dead writer's file never grows again: what it left cut short stays so.
                if finished { folded.finished.append(entry) }
            }
        }
        // Rows of files that are gone: their writers finished and were removed.
        for name in offsets.keys where !entries.journals.contains(name) {
            var info = stat()
            if stat(directory + "/" + name, &info) != 0, errno == ENOENT {
                try db.execute("DELETE FROM run_journal_fold WHERE name = ?", [name])
            }
        }
        // A file a writer created and died before naming holds nothing yet.
        for name in entries.abandoned {
            let file = open(directory + "/" + name, O_RDONLY | O_CLOEXEC)
            guard file >= 0 else { continue }
            if flock(file, LOCK_EX | LOCK_NB) == 0 { folded.finished.append(name) }
            Glibc.close(file)
        }
        return folded
    }

    /// Applies records in one go, or, when that fails, record by record and then write by write, each in a
    /// savepoint: a write the tables refuse (a row that does not exist) loses only itself, as the engine's own
    /// retry of a failed commit does, and never stops the journals behind it from being applied.
    static func apply(_ records: [[JournalWrite]], in db: any SQLConnection) throws(StoreError) {
        guard !records.isEmpty else { return }
        guard let connection = db as? GRDBConnection else { return try SQLRunStore.apply(journal: records, in: db) }
        /// False when a constraint refused the writes; any other error (a full disk, I/O) is the database's
        /// and stops the fold, so nothing is counted as applied that was not.
        func savepoint(_ records: [[JournalWrite]]) throws(StoreError) -> Bool {
            do {
                try connection.db.inSavepoint {
                    try SQLRunStore.apply(journal: records, in: connection)
                    return .commit
                }
                return true
            } catch let error as StoreError {
                if error.isConstraint { return false }
                throw error
            } catch {
                throw StoreError("database write failed: \(error)")
            }
        }
        if try savepoint(records) { return }
        for record in records where try !savepoint([record]) {
            for write in record { _ = try savepoint([[write]]) }
        }
    }

    func committed(_ folded: Folded) {
        if let (offset, records) = folded.own {
            own.withLock { own in
                if offset > own.folded { own.folded = offset }
                // Another reader may have applied records of ours: the bytes say what is left.
                own.unfoldedRecords = own.folded >= own.appended ? 0 : max(0, own.unfoldedRecords - records)
            }
        }
        foreign.withLock { known in
            known = known.filter { folded.foreign[$0.key] != nil }
            for (name, offset) in folded.foreign { known[name] = max(known[name] ?? 0, offset) }
        }
        // The row goes only once the file is gone: a file is never read again from offset 0.
        guard !folded.finished.isEmpty else { return }
        for name in folded.finished { unlink(directory + "/" + name) }
        try? database.write { (db) throws(StoreError) -> Void in
            for name in folded.finished { try db.execute("DELETE FROM run_journal_fold WHERE name = ?", [name]) }
        }
    }

    /// Runs `body` in a write transaction that first applies what the journals hold.
    func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        guard mayHavePending() else { return try database.write(body) }
        var folded = Folded()
        let result = try database.write { (db) throws(StoreError) -> T in
            folded = try fold(in: db)
            return try body(db)
        }
        committed(folded)
        return result
    }

    func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        mayHavePending() ? try write(body) : try database.read(body)
    }

    /// Applies what is pending now.
    func foldNow() throws(StoreError) {
        try write { (_) throws(StoreError) in }
    }

    private static func read(_ file: Int32, from offset: Int64, count: Int, entry: String) throws(StoreError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        let failure: Int32? = bytes.withUnsafeMutableBytes { buffer in
            while done < count {
                let n = pread(file, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if n == 0 { break }
                done += n
            }
            return nil
        }
        if let failure { throw StoreError("cannot read the run journal \(entry): \(String(cString: strerror(failure)))") }
        return Array(bytes.prefix(done))
    }

    /// The journal files in `directory` (none when it does not exist), and `.new` files: journals whose
    /// writer may have died before naming them.
    static func entries(of directory: String) throws(StoreError) -> (journals: [String], abandoned: [String]) {
        guard let handle = opendir(directory) else {
            if errno == ENOENT { return ([], []) }
            throw StoreError("cannot list the run journals in \(directory): \(String(cString: strerror(errno)))")
        }
        defer { closedir(handle) }
        var journals: [String] = [], abandoned: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name.hasSuffix(".log") { journals.append(name) } else if name.hasSuffix(".log.new") { abandoned.append(name) }
        }
        return (journals, abandoned)
    }

    // MARK: The folder

    /// The thread that applies this process's records in batches: at `foldBatch` records, or `foldDelay`
    /// after the first one waiting, so the engine's thread does not.
    private final class Folder: Sendable {
        let wake = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let stopping = Atomic<Bool>(false)
        /// Bytes of this process's journal to apply without waiting for more (`applySoon`): a target, not a flag,
        /// so a request never outlives the records it was made for.
        let soonUntil = Atomic<Int64>(0)
    }

    /// Has the folder apply what is waiting now rather than after `foldDelay`: the engine asks once no job
    /// is left to start, so the run's last write does not apply a whole batch while the CPUs sit idle.
    /// Records appended later wait as usual.
    func applySoon() {
        guard let target = own.withLock({ $0.folded < $0.appended && !$0.closing ? $0.appended : nil }),
              let folder = self.folder.withLock({ $0 }) else { return }
        folder.soonUntil.max(target, ordering: .relaxed)
        folder.wake.signal()
    }

    private func wakeFolder() {
        if own.withLock({ $0.closing }) { return }
        let folder = self.folder.withLock { slot -> Folder? in
            if let folder = slot { return folder }
            let folder = Folder()
            slot = folder
            let thread = Thread { [self] in
                // Background work: the engine's thread and the steps' processes come first (a thread may
                // always lower its own priority). The last records are applied by whoever reads or closes.
                _ = slipway_lower_thread_priority(10)
                // Named from inside: the name Foundation's `Thread` is given is not the kernel's.
                slipway_set_thread_name("slipway-journal")
                while !folder.stopping.load(ordering: .relaxed) {
                    let (waiting, folded) = own.withLock { ($0.folded >= $0.appended ? 0 : max(1, $0.unfoldedRecords), $0.folded) }
                    if waiting == 0 {
                        folder.wake.wait()
                        continue
                    }
                    if waiting < Self.foldBatch, folded >= folder.soonUntil.load(ordering: .relaxed) {
                        _ = folder.wake.wait(timeout: .now() + foldDelay)
                    }
                    if folder.stopping.load(ordering: .relaxed) { break }
                    // A failure stays in the journal: the next read or write reports it.
                    if (try? foldNow()) == nil { _ = folder.wake.wait(timeout: .now() + .seconds(1)) }
                }
                folder.done.signal()
            }
            thread.start()
            return nil  // a new folder finds the records waiting by itself
        }
        folder?.wake.signal()
    }

    /// Stops the folder, applies what is left and removes this process's journal when all of it is applied.
    /// Commits from here on go to the tables.
    func close() {
        own.withLock { $0.closing = true; $0.broken = true }
        if let folder = self.folder.withLock({ slot -> Folder? in defer { slot = nil }; return slot }) {
            folder.stopping.store(true, ordering: .relaxed)
            folder.wake.signal()
            // Bounded: a store released inside one of its own transactions must not wait on itself.
            _ = folder.done.wait(timeout: .now() + .seconds(10))
        }
        // What is left is applied and committed first: the file goes only once all of it is in the tables.
        if let folded = try? database.write({ (db) throws(StoreError) in try fold(in: db) }), let (offset, _) = folded.own {
            own.withLock { if offset > $0.folded { $0.folded = offset } }
        }
        // The descriptors are closed inside a transaction, so no fold (which reads through them) is running.
        let path = try? database.write { (_) throws(StoreError) -> String? in
            own.withLock { own -> String? in
                guard own.file >= 0 else { return nil }
                let complete = own.folded == own.appended
                Glibc.close(own.file)
                if own.reader >= 0 { Glibc.close(own.reader) }
                own.file = -1
                own.reader = -1
                return complete ? directory + "/" + own.name : nil
            }
        }
        guard let path = path ?? nil else { return }
        // Removed before its row: a file is never read again from offset 0 (a later fold drops the row of a
        // file that is gone, should this process die in between).
        unlink(path)
        _ = try? database.write { (db) throws(StoreError) -> Void in
            try db.execute("DELETE FROM run_journal_fold WHERE name = ?", [(path as NSString).lastPathComponent])
        }
    }
}

/// The run store's database on SQLite: every transaction first applies what the journals hold.
final class JournaledDatabase: SQLDatabase {
    let journal: RunJournal
    var dialect: SQLDialect { .sqlite }

    init(journal: RunJournal) { self.journal = journal }

    func write<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try journal.write(body) }
    func read<T>(_ body: (any SQLConnection) throws(StoreError) -> T) throws(StoreError) -> T { try journal.read(body) }
    func migrate(_ migrations: [SQLMigration]) throws(StoreError) { try journal.database.migrate(migrations) }
}

extension SQLRunStore {
    /// Applies journal records, in order, as `apply` would have: a batch's writes to one row are merged
    /// first (a step inserted and ended in the batch is one INSERT), so each row is written once.
    static func apply(journal records: [[JournalWrite]], in db: any SQLConnection) throws(StoreError) {
        var attempts = MergedRows<AttemptRecord>(), steps = MergedRows<StepRecord>()
        var jobs: [JobKey: JobRecord] = [:], jobOrder: [JobKey] = []
        var events: [RunEventRecord] = []
        for record in records {
            for write in record {
                switch write {
                case .insertAttempt(let attempt): attempts.insert(attempt, id: attempt.id)
                case .updateAttempt(let attempt):
                    // The columns `update(_: AttemptRecord, in:)` sets.
                    attempts.update(attempt, id: attempt.id) { row, end in
                        row.status = end.status
                        row.failure = end.failure
                        row.finishedAt = end.finishedAt
                    }
                case .insertStep(let step): steps.insert(step, id: step.id)
                case .updateStep(let step):
                    // The columns `update(_: StepRecord, in:)` sets.
                    steps.update(step, id: step.id) { row, end in
                        row.status = end.status
                        row.exitCode = end.exitCode
                        row.failure = end.failure
                        row.processGroup = end.processGroup
                        row.startedAt = end.startedAt
                        row.finishedAt = end.finishedAt
                    }
                case .updateJob(let job):
                    let key = JobKey(runID: job.runID, key: job.key)
                    if jobs[key] == nil { jobOrder.append(key) }
                    jobs[key] = job
                case .appendEvent(let event):
                    events.append(event)
                }
            }
        }
        // Attempts before their steps (the steps' foreign key). New rows go in many to a statement.
        let attemptRows = attempts.inOrder
        try insertRows(into: "attempt", ["id", "job_row_id", "number", "status", "failure", "started_at", "finished_at"],
                       attemptRows.filter(\.insert).map { attempt, _ in
                           [attempt.id, attempt.jobRowID, attempt.number, attempt.status.rawValue, attempt.failure, attempt.startedAt, attempt.finishedAt] as [any SQLBindable]
                       }, in: db)
        for (attempt, insert) in attemptRows where !insert { try update(attempt, in: db) }
        let stepRows = steps.inOrder
        try insertRows(into: "step", ["id", "attempt_id", "idx", "name", "status", "exit_code", "failure", "log_path", "process_group", "started_at", "finished_at"],
                       stepRows.filter(\.insert).map { step, _ in
                           [step.id, step.attemptID, step.index, step.name, step.status.rawValue, step.exitCode, step.failure, step.logPath, step.processGroup,
                            step.startedAt, step.finishedAt] as [any SQLBindable]
                       }, in: db)
        for (step, insert) in stepRows where !insert { try update(step, in: db) }
        for key in jobOrder { if let job = jobs[key] { try update(job, in: db) } }
        // In their order: an event's id is its place in the history.
        try insertRows(into: "event", ["run_id", "at", "job_key", "kind", "message"],
                       events.map { [$0.runID, $0.at, $0.jobKey, $0.kind, $0.message] as [any SQLBindable] }, in: db)
    }

    /// The rows a batch writes to one table, in the order first written; an update of a row the batch
    /// inserts (or already updates) is merged into that write, so each row is written once.
    struct MergedRows<Record> {
        private var rows: [Int64: (record: Record, insert: Bool)] = [:]
        private var order: [Int64] = []

        mutating func insert(_ record: Record, id: Int64) {
            if rows[id] == nil { order.append(id) }
            rows[id] = (record, true)
        }

        mutating func update(_ record: Record, id: Int64, merge: (inout Record, Record) -> Void) {
            guard var pending = rows[id] else {
                order.append(id)
                rows[id] = (record, false)
                return
            }
            merge(&pending.record, record)
            rows[id] = pending
        }

        var inOrder: [(record: Record, insert: Bool)] { order.compactMap { rows[$0] } }
    }

    struct JobKey: Hashable {
        var runID: Int64
        var key: String
    }
}
