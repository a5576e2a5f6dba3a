// The durable floor of the wide-DAG benchmark (b): the least work any engine meeting issue 2's rules can do
// per job, in one single-threaded C event loop with no scheduler, no expressions and no Swift runtime.
//
// Per job it does only what the rules require: the step is on record as running in SQLite (WAL,
// synchronous=NORMAL, as Slipway) before its process starts; the process gets its own process group and
// pipes for stdout and stderr; its output goes to a timestamped log file of its own, created when the first
// output arrives (as Slipway does: a silent step leaves no file); its end is on record (committed with the
// next turn's start, as Slipway does). It keeps no history beyond that and resolves nothing.
//
//   floor DB LOGDIR JOBS PARALLEL MODE
//   MODE journal: one append-only row per turn (the least SQLite can write per transaction)
//   MODE tables:  Slipway's own per-turn writes in Slipway's schema (job, attempt, step and event rows
//                 and their indexes: ~10 WAL frames per turn)
//
// Build: cc -O2 -o floor bench/floor.c -lsqlite3
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static sqlite3 *db;
static int tables;

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, db ? sqlite3_errmsg(db) : strerror(errno));
    exit(1);
}

static void exec_sql(const char *sql) {
    char *error = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) { fprintf(stderr, "floor: %s: %s\n", sql, error); exit(1); }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static sqlite3_stmt *prepare(const char *sql) {
    sqlite3_stmt *statement;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, NULL) != SQLITE_OK) die(sql);
    return statement;
}

static void step_done(sqlite3_stmt *statement) {
    if (sqlite3_step(statement) != SQLITE_DONE) die("step");
    sqlite3_reset(statement);
}

struct slot {
    int busy, job, log, fds[2], open;
    char path[512];
    pid_t pid;
    sqlite3_int64 attempt, step;
};

static sqlite3_stmt *journal, *job_start, *job_end, *attempt_insert, *attempt_end, *step_insert, *step_end, *event_insert;
static const char *definition = "{\"artifacts\":[],\"cacheInputs\":null,\"continueOnError\":false,\"env\":{},\"id\":\"jN\",\"junitReports\":[],\"key\":\"jN\",\"matrix\":{},\"outputs\":[],\"steps\":[{\"continueOnError\":false,\"env\":{},\"name\":\"/bin/true\",\"run\":\"/bin/true\"}]}";

// The end of the job in `slot`, written in the same transaction as the next start.
static void record_end(struct slot *s, int status) {
    double at = now();
    if (!tables) {
        sqlite3_bind_int(journal, 1, s->job);
        sqlite3_bind_text(journal, 2, status == 0 ? "success" : "failure", -1, SQLITE_STATIC);
        sqlite3_bind_double(journal, 3, at);
        sqlite3_bind_null(journal, 4);
        step_done(journal);
        return;
    }
    sqlite3_bind_int(step_end, 1, status);
    sqlite3_bind_double(step_end, 2, at);
    sqlite3_bind_int64(step_end, 3, s->step);
    step_done(step_end);
    sqlite3_bind_double(attempt_end, 1, at);
    sqlite3_bind_int64(attempt_end, 2, s->attempt);
    step_done(attempt_end);
    sqlite3_bind_text(job_end, 1, status == 0 ? "success" : "failure", -1, SQLITE_STATIC);
    sqlite3_bind_double(job_end, 2, at);
    sqlite3_bind_int(job_end, 3, s->job);
    step_done(job_end);
    sqlite3_bind_int(event_insert, 1, s->job);
    sqlite3_bind_double(event_insert, 2, at);
    sqlite3_bind_text(event_insert, 3, "job-success", -1, SQLITE_STATIC);
    step_done(event_insert);
}

static void record_start(struct slot *s, const char *log_path) {
    double at = now();
    if (!tables) {
        sqlite3_bind_int(journal, 1, s->job);
        sqlite3_bind_text(journal, 2, "running", -1, SQLITE_STATIC);
        sqlite3_bind_double(journal, 3, at);
        sqlite3_bind_text(journal, 4, definition, -1, SQLITE_STATIC);
        step_done(journal);
        return;
    }
    sqlite3_bind_text(job_start, 1, definition, -1, SQLITE_STATIC);
    sqlite3_bind_double(job_start, 2, at);
    sqlite3_bind_int(job_start, 3, s->job);
    step_done(job_start);
    sqlite3_bind_int(attempt_insert, 1, s->job);
    sqlite3_bind_double(attempt_insert, 2, at);
    step_done(attempt_insert);
    s->attempt = sqlite3_last_insert_rowid(db);
    sqlite3_bind_int64(step_insert, 1, s->attempt);
    sqlite3_bind_text(step_insert, 2, log_path, -1, SQLITE_STATIC);
    sqlite3_bind_double(step_insert, 3, at);
    step_done(step_insert);
    s->step = sqlite3_last_insert_rowid(db);
    sqlite3_bind_int(event_insert, 1, s->job);
    sqlite3_bind_double(event_insert, 2, at);
    sqlite3_bind_text(event_insert, 3, "attempt-started", -1, SQLITE_STATIC);
    step_done(event_insert);
}

static void write_line(int fd, const char *text) {
    char line[256];
    int n = snprintf(line, sizeof line, "%.6f %s\n", now(), text);
    if (write(fd, line, n) < 0) die("write log");
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: floor DB LOGDIR JOBS PARALLEL journal|tables\n"); return 2; }
    const char *logdir = argv[2];
    int jobs = atoi(argv[3]), parallel = atoi(argv[4]);
    tables = strcmp(argv[5], "tables") == 0;
    if (parallel < 1 || parallel > 64 || jobs < 1) { fprintf(stderr, "floor: bad JOBS or PARALLEL\n"); return 2; }
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) die("open");
    exec_sql("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    exec_sql("CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, job INTEGER NOT NULL, state TEXT NOT NULL, at DOUBLE NOT NULL, definition TEXT);"
             "CREATE TABLE IF NOT EXISTS job (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL,"
             "  attempts INTEGER NOT NULL, outputs TEXT NOT NULL, definition TEXT, started_at DOUBLE, finished_at DOUBLE, UNIQUE(run_id, key));"
             "CREATE TABLE IF NOT EXISTS attempt (id INTEGER PRIMARY KEY AUTOINCREMENT, job_row_id INTEGER NOT NULL, number INTEGER NOT NULL,"
             "  status TEXT NOT NULL, failure TEXT, started_at DOUBLE NOT NULL, finished_at DOUBLE);"
             "CREATE INDEX IF NOT EXISTS attempt_by_job ON attempt(job_row_id);"
             "CREATE TABLE IF NOT EXISTS step (id INTEGER PRIMARY KEY AUTOINCREMENT, attempt_id INTEGER NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL,"
             "  status TEXT NOT NULL, exit_code INTEGER, failure TEXT, log_path TEXT NOT NULL, process_group INTEGER, started_at DOUBLE NOT NULL, finished_at DOUBLE);"
             "CREATE INDEX IF NOT EXISTS step_by_attempt ON step(attempt_id);"
             "CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, at DOUBLE NOT NULL, job_key TEXT,"
             "  kind TEXT NOT NULL, message TEXT NOT NULL);"
             "CREATE INDEX IF NOT EXISTS event_by_run ON event(run_id);");
    journal = prepare("INSERT INTO journal (job, state, at, definition) VALUES (?, ?, ?, ?)");
    job_start = prepare("UPDATE job SET status = 'running', attempts = 1, definition = ?, started_at = ? WHERE run_id = 1 AND key = 'j' || ?");
    job_end = prepare("UPDATE job SET status = ?, finished_at = ? WHERE run_id = 1 AND key = 'j' || ?");
    attempt_insert = prepare("INSERT INTO attempt (job_row_id, number, status, started_at) VALUES (?, 1, 'running', ?)");
    attempt_end = prepare("UPDATE attempt SET status = 'success', finished_at = ? WHERE id = ?");
    step_insert = prepare("INSERT INTO step (attempt_id, idx, name, status, log_path, started_at) VALUES (?, 0, '/bin/true', 'running', ?, ?)");
    step_end = prepare("UPDATE step SET status = 'success', exit_code = ?, finished_at = ? WHERE id = ?");
    event_insert = prepare("INSERT INTO event (run_id, at, job_key, kind, message) VALUES (1, ?2, 'j' || ?1, ?3, '')");
    if (tables) {
        // The run's jobs are inserted pending up front, as Slipway does.
        exec_sql("BEGIN");
        sqlite3_stmt *insert = prepare("INSERT INTO job (run_id, key, status, attempts, outputs) VALUES (1, 'j' || ?, 'pending', 0, '{}')");
        for (int j = 1; j <= jobs; j++) { sqlite3_bind_int(insert, 1, j); step_done(insert); }
        sqlite3_finalize(insert);
        exec_sql("COMMIT");
    }
    sqlite3_stmt *begin = prepare("BEGIN IMMEDIATE"), *commit = prepare("COMMIT");

    struct slot slots[64] = {0};
    struct pollfd fds[128];
    char *argv_true[] = {"/bin/true", NULL};
    int next = 1, finished = 0, pending_ends = 0;
    struct slot ended[64];
    int ended_status[64];
    while (finished < jobs) {
        // One transaction per turn: the ends seen since the last turn and the starts that fill free slots.
        int starting[64], starts = 0;
        for (int i = 0; i < parallel && next <= jobs; i++) if (!slots[i].busy) { starting[starts++] = i; slots[i].busy = 1; slots[i].job = next++; }
        if (starts || pending_ends) {
            step_done(begin);
            for (int e = 0; e < pending_ends; e++) record_end(&ended[e], ended_status[e]);
            for (int k = 0; k < starts; k++) {
                struct slot *s = &slots[starting[k]];
                snprintf(s->path, sizeof s->path, "%s/j%d.log", logdir, s->job);
                record_start(s, s->path);
            }
            step_done(commit);
            pending_ends = 0;
            for (int k = 0; k < starts; k++) {
                struct slot *s = &slots[starting[k]];
                s->log = -1;
                int out[2], err[2];
                if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) die("pipe");
                pid_t pid = vfork();
                if (pid == 0) {
                    setpgid(0, 0);
                    dup2(out[1], 1);
                    dup2(err[1], 2);
                    execve(argv_true[0], argv_true, environ);
                    _exit(127);
                }
                if (pid < 0) die("vfork");
                close(out[1]);
                close(err[1]);
                s->pid = pid;
                s->fds[0] = out[0];
                s->fds[1] = err[0];
                s->open = 2;
            }
        }
        // Wait for output or the end of a step's pipes.
        int n = 0, owner[128], which[128];
        for (int i = 0; i < parallel; i++) {
            if (!slots[i].busy) continue;
            for (int f = 0; f < 2; f++) if (slots[i].fds[f] >= 0) { fds[n] = (struct pollfd){slots[i].fds[f], POLLIN, 0}; owner[n] = i; which[n++] = f; }
        }
        if (poll(fds, n, -1) < 0 && errno != EINTR) die("poll");
        for (int p = 0; p < n; p++) {
            if (!fds[p].revents) continue;
            struct slot *s = &slots[owner[p]];
            char buffer[16384];
            ssize_t r = read(fds[p].fd, buffer, sizeof buffer);
            if (r > 0) {
                if (s->log < 0 && (s->log = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) die("open log");
                write_line(s->log, "output");
                if (write(s->log, buffer, r) < 0) die("write log");
                continue;
            }
            close(fds[p].fd);
            s->fds[which[p]] = -1;
            if (--s->open == 0) {
                int status;
                if (waitpid(s->pid, &status, 0) != s->pid) die("waitpid");
                if (s->log >= 0) close(s->log);
                ended[pending_ends] = *s;
                ended_status[pending_ends++] = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
                s->busy = 0;
                finished++;
            }
        }
    }
    if (pending_ends) {
        step_done(begin);
        for (int e = 0; e < pending_ends; e++) record_end(&ended[e], ended_status[e]);
        step_done(commit);
    }
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    return sqlite3_close_v2(db) == SQLITE_OK ? 0 : 1;
}
