#ifndef CSLIPWAY_SQLITE_H
#define CSLIPWAY_SQLITE_H
#include <stdint.h>

/// One statement parameter: kind 0 NULL, 1 integer, 2 real, 3 text (UTF-8), 4 blob.
typedef struct {
    int32_t kind;
    int32_t length;
    int64_t integer;
    double real;
    const void *bytes;
} slipway_sql_value;

/// Binds `values` to a prepared statement (a `sqlite3_stmt *`) without copying them, steps it to the end,
/// then resets it and clears its bindings, so nothing points at the caller's memory afterwards. Returns
/// SQLITE_OK, SQLITE_RANGE when `count` is not the statement's parameter count, or SQLite's error code.
int slipway_sqlite_execute(void *statement, const slipway_sql_value *values, int32_t count);

/// How many parameters the statement takes.
int32_t slipway_sqlite_parameter_count(void *statement);

/// The error message of the statement's connection (valid until its next call).
const char *slipway_sqlite_errmsg(void *statement);

/// Whether the statement's connection is in autocommit mode (no transaction open): after some errors
/// (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM) SQLite rolls the whole transaction back by itself.
int slipway_sqlite_autocommit(void *statement);

/// Lowers the calling thread's own scheduling priority to `nice` (a background thread; never needs privileges).
int slipway_lower_thread_priority(int nice);
#endif
