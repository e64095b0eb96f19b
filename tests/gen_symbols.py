#!/usr/bin/env python3
"""Writes a C file that takes the address of every function chorus.h (and
chorus_json.h) declares with CHORUS_API, so linking it against the shared
library proves each public symbol is exported."""
import re
import sys

out, headers = sys.argv[1], sys.argv[2:]
names = []
for h in headers:
    text = open(h, encoding="utf-8").read()
    for m in re.finditer(r"CHORUS_API\b[^;{]*?\b(chorus_\w+)\s*\(", text, re.S):
        if m.group(1) not in names:
            names.append(m.group(1))
with open(out, "w", encoding="utf-8") as f:
    f.write('#include "chorus/chorus.h"\n#include "chorus/chorus_json.h"\n#include "chorus/chorus_pg.h"\n#include <stdio.h>\n\n')
    f.write("typedef void (*fn_t)(void);\nstatic const struct { const char *name; fn_t fn; } syms[] = {\n")
    for n in names:
        f.write('    {"%s", (fn_t)%s},\n' % (n, n))
    f.write("};\n\nint main(void) {\n    size_t n = sizeof(syms) / sizeof(syms[0]);\n")
    f.write("    for (size_t i = 0; i < n; i++)\n        if (!syms[i].fn) { printf(\"missing %s\\n\", syms[i].name); return 1; }\n")
    f.write("    printf(\"%zu public symbols link\\n\", n);\n    return n > 0 ? 0 : 1;\n}\n")
