/*
 * integrity_check.c: the isolation self-check, run inside the agent container with exactly the
 * agent's flags and binds just before the agent starts (scripts_hpc/lib/containers.sh:
 * mh_integrity_check). A static binary from the host, bound read-only into the container, with
 * the image's environment scripts masked: no code of the agent image runs during the check, so the
 * image cannot fake its record (an image's own `sh`, libc or profile would otherwise run it).
 * Built by scripts_hpc/build_checker.sh (`make install`).
 *
 * Prints one JSON object on stdout; exit 0 when "ok", 1 when a leak was seen, 2 on a usage error.
 *
 * usage: integrity-check [-p DEV:INO:HOSTPATH]... [-m HOSTPATH]... [-e NAME]... [-c PATTERN]...
 *                        [-k NAME]... [-s PID:STARTTIME]...
 *   -p  a host path the agent must not reach, with its host identity (stat -c %d:%i); the path is
 *       "reachable" when it exists here with that same identity (the image may have its own /root).
 *   -m  a host path no mount in this container may come from (a bind of it or of anything below it).
 *   -e  an extra allowed environment variable name (the agent env file's names).
 *   -c  a command-line substring of host processes that must be invisible (default run_grading_server).
 *   -k  a canary variable the host set in its own environment: visible here means --cleanenv is off.
 *   -s  PID:STARTTIME of a host process (field 22 of /proc/PID/stat): seen here means no --pid.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define CHECKER_VERSION "mlebench-hpc integrity-check 2"
#define MAX_ITEMS 256
#define MAX_LINE 8192

extern char **environ;

static const char *paths[MAX_ITEMS], *mounts[MAX_ITEMS], *allow[MAX_ITEMS], *patterns[MAX_ITEMS];
static const char *canaries[MAX_ITEMS], *hostprocs[MAX_ITEMS];
static int npaths, nmounts, nallow, npatterns, ncanaries, nhostprocs;
static int ok = 1;

/* apptainer sets these in every container; the rest come from the agent's own flags */
static const char *base_allow[] = {"PATH", "HOME", "COMPETITION_ID", "TIME_LIMIT_SECS", "STEP_LIMIT",
                                   "GRADING_SERVER", "LANG", "TERM", "PS1", "SHLVL", "PWD", "_", "OLDPWD",
                                   "LD_LIBRARY_PATH", "PROMPT_COMMAND", NULL};

static void usage(void) {
    fputs("usage: integrity-check [-p DEV:INO:PATH] [-m PATH] [-e NAME] [-c PATTERN] [-k NAME] "
          "[-s PID:START]\n", stderr);
    exit(2);
}

static void add(const char **list, int *n, const char *value) {
    if (*n >= MAX_ITEMS) usage();
    list[(*n)++] = value;
}

/* A JSON string literal: quotes, backslashes and every control byte escaped. */
static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s) {
    char *out = s;
    while (*s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
            s[3] <= '7') {
            *out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 4;
        } else {
            *out++ = *s++;
        }
    }
    *out = 0;
}

static int is_prefix_path(const char *root, const char *m) {
    size_t n = strlen(m);
    return strncmp(root, m, n) == 0 && (root[n] == 0 || root[n] == '/');
}

static void check_paths(void) {
    printf("\"paths\":[");
    for (int i = 0; i < npaths; i++) {
        /* DEV:INO:/path (the path is everything after the second colon) */
        unsigned long long dev, ino;
        int used = 0;
        if (sscanf(paths[i], "%llu:%llu:%n", &dev, &ino, &used) != 2 || paths[i][used] != '/') usage();
        const char *path = paths[i] + used;
        struct stat st;
        int exists = stat(path, &st) == 0;
        int reachable = exists && (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
        if (reachable) ok = 0;
        printf("%s{\"path\":", i ? "," : "");
        json_str(path);
        printf(",\"exists\":%s,\"reachable\":%s}", exists ? "true" : "false", reachable ? "true" : "false");
    }
    printf("],");
}

static void check_mounts(void) {
    printf("\"forbidden_mounts\":[");
    FILE *f = fopen("/proc/self/mountinfo", "r");
    int first = 1;
    char line[MAX_LINE];
    while (f && nmounts && fgets(line, sizeof line, f)) {
        /* id parent major:minor root mountpoint ... */
        char *save = NULL, *field[5];
        int k = 0;
        for (char *t = strtok_r(line, " \n", &save); t && k < 5; t = strtok_r(NULL, " \n", &save)) field[k++] = t;
        if (k < 5) continue;
        unescape_octal(field[3]);
        unescape_octal(field[4]);
        for (int i = 0; i < nmounts; i++) {
            if (is_prefix_path(field[3], mounts[i])) {
                char shown[2 * MAX_LINE + 8];
                snprintf(shown, sizeof shown, "%s -> %s", field[3], field[4]);
                if (!first) putchar(',');
                json_str(shown);
                first = 0;
                ok = 0;
                break;
            }
        }
    }
    if (f) fclose(f);
    printf("],");
}

static int allowed_name(const char *name, size_t len) {
    for (int i = 0; base_allow[i]; i++)
        if (strlen(base_allow[i]) == len && strncmp(base_allow[i], name, len) == 0) return 1;
    for (int i = 0; i < nallow; i++)
        if (strlen(allow[i]) == len && strncmp(allow[i], name, len) == 0) return 1;
    static const char *prefixes[] = {"APPTAINER_", "SINGULARITY_", "APPTAINERENV_", NULL};
    for (int i = 0; prefixes[i]; i++)
        if (len >= strlen(prefixes[i]) && strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) return 1;
    return 0;
}

static void check_env(void) {
    printf("\"unexpected_env\":[");
    int first = 1;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        if (allowed_name(*e, len)) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len < 255 ? len : 255), *e);
        if (!first) putchar(',');
        json_str(name); /* names only, never values */
        first = 0;
        ok = 0;
    }
    int visible = 0;
    for (int i = 0; i < ncanaries; i++) {
        const char *v = getenv(canaries[i]);
        if (v && *v) visible = 1;
    }
    if (visible) ok = 0;
    printf("],\"canary_visible\":%s,", visible ? "true" : "false");
}

/* Field 22 (starttime) of /proc/PID/stat, counted after the ")" that ends the command name. */
static int proc_starttime(const char *pid, char *out, size_t outlen) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p += 2; /* field 3 */
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    if (!p) return -1;
    size_t len = strcspn(p, " \n");
    snprintf(out, outlen, "%.*s", (int)len, p);
    return 0;
}

static void check_processes(void) {
    DIR *d = opendir("/proc");
    int visible = 0, matching = 0;
    pid_t self = getpid();
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0])) continue;
        visible++;
        if (atoi(de->d_name) == self) continue;
        char path[300], cmd[MAX_LINE];
        snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, cmd, sizeof cmd - 1);
        close(fd);
        if (n <= 0) continue;
        for (ssize_t i = 0; i < n; i++)
            if (cmd[i] == 0) cmd[i] = ' ';
        cmd[n] = 0;
        for (int i = 0; i < npatterns; i++) {
            if (strstr(cmd, patterns[i])) {
                matching++;
                break;
            }
        }
    }
    if (d) closedir(d);
    if (matching) ok = 0;
    int host_visible = 0;
    for (int i = 0; i < nhostprocs; i++) {
        char pid[32], got[64];
        const char *colon = strchr(hostprocs[i], ':');
        if (!colon || colon - hostprocs[i] >= (long)sizeof pid) usage();
        snprintf(pid, sizeof pid, "%.*s", (int)(colon - hostprocs[i]), hostprocs[i]);
        if (proc_starttime(pid, got, sizeof got) == 0 && strcmp(got, colon + 1) == 0) host_visible = 1;
    }
    if (host_visible) ok = 0;
    printf("\"processes\":{\"visible\":%d,\"grading_server_visible\":%s,\"matching\":%d,"
           "\"host_process_visible\":%s}",
           visible, matching ? "true" : "false", matching, host_visible ? "true" : "false");
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "p:m:e:c:k:s:")) != -1) {
        switch (opt) {
        case 'p': add(paths, &npaths, optarg); break;
        case 'm': add(mounts, &nmounts, optarg); break;
        case 'e': add(allow, &nallow, optarg); break;
        case 'c': add(patterns, &npatterns, optarg); break;
        case 'k': add(canaries, &ncanaries, optarg); break;
        case 's': add(hostprocs, &nhostprocs, optarg); break;
        default: usage();
        }
    }
    if (optind != argc) usage();
    if (!npatterns) add(patterns, &npatterns, "run_grading_server");
    printf("{");
    check_paths();
    check_mounts();
    check_env();
    check_processes();
    printf(",\"ok\":%s,\"checker\":\"" CHECKER_VERSION "\",\"uid\":%d}\n", ok ? "true" : "false", (int)getuid());
    fflush(stdout);
    return ok ? 0 : 1;
}
