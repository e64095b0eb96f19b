/* chorus-conf-docs: prints lib/docs/CONFIGURATION.md from the property table. */
#include "chorus/chorus.h"

#include <stdio.h>

int main(void) {
    chorus_conf_write_docs(stdout);
    return 0;
}
