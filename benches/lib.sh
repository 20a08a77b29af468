# Shared by the benches (source it): a work dir removed on exit with every
# process started into `pids`, free loopback ports, and the upstream every
# proxy is measured in front of, a dedicated nginx serving 1 KiB from memory.

# bench_init PREFIX: sets `work` and `pids`, and cleans both up on exit.
bench_init() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$work"   # nginx workers drop root and must read the 1 KiB file
  pids=()
  export ESPRIT_ADMIN_LISTEN=off   # several edges at once: none takes the admin port
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local rc=$?   # the bench's own status, not that of the processes killed here
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_upstream_1k: starts the 1 KiB nginx upstream; sets `UP` to its port.
start_upstream_1k() {
  UP=$(free_port)
  head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k.txt"
  mkdir -p "$work/up"
  cat > "$work/up/nginx.conf" <<CONF
worker_processes 1;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$UP;
    location / { root $work; try_files /1k.txt =404; default_type text/plain; }
  }
}
CONF
  nginx -p "$work/up" -c "$work/up/nginx.conf" -g 'daemon off;' & pids+=($!)
}
