/* cm.h - cmocka with the headers it needs before it. */
#ifndef CHORUS_TEST_CM_H
#define CHORUS_TEST_CM_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#endif
