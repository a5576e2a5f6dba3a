#define _GNU_SOURCE
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "CSlipwaySQLite.h"

int slipway_sqlite_execute(void *statement, const slipway_sql_value *values, int32_t count) {
    sqlite3_stmt *stmt = statement;
    int code = sqlite3_reset(stmt);
    if (code != SQLITE_OK) return code;
    if (sqlite3_bind_parameter_count(stmt) != count) return SQLITE_RANGE;
    for (int32_t i = 0; i < count && code == SQLITE_OK; i++) {
        const slipway_sql_value *value = &values[i];
        switch (value->kind) {
        case 1: code = sqlite3_bind_int64(stmt, i + 1, value->integer); break;
        case 2: code = sqlite3_bind_double(stmt, i + 1, value->real); break;
        case 3: code = sqlite3_bind_text(stmt, i + 1, value->bytes ? value->bytes : "", value->length, SQLITE_STATIC); break;
        case 4: code = sqlite3_bind_blob(stmt, i + 1, value->bytes ? value->bytes : "", value->length, SQLITE_STATIC); break;
        default: code = sqlite3_bind_null(stmt, i + 1); break;
        }
    }
    if (code == SQLITE_OK) {
        do { code = sqlite3_step(stmt); } while (code == SQLITE_ROW);
        if (code == SQLITE_DONE) code = SQLITE_OK;
    }
    /* The reset of a failed step returns the same error again: the step's code is the one reported. */
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return code;
}

int32_t slipway_sqlite_parameter_count(void *statement) {
    return sqlite3_bind_parameter_count((sqlite3_stmt *)statement);
}

const char *slipway_sqlite_errmsg(void *statement) {
    return sqlite3_errmsg(sqlite3_db_handle((sqlite3_stmt *)statement));
}

int slipway_sqlite_autocommit(void *statement) {
    return sqlite3_get_autocommit(sqlite3_db_handle((sqlite3_stmt *)statement));
}

int slipway_lower_thread_priority(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}
