{
  "targets": [
    {
      "target_name": "ambit_sockets",
      "sources": ["sockets.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    },
    {
      "target_name": "ambit_memory",
      "sources": ["memory.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    },
    {
      "target_name": "ambit_inpod_routing",
      "sources": ["inpod-routing.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    },
    {
      "target_name": "ambit_inpod_nftables",
      "sources": ["inpod-nftables.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    },
    {
      "target_name": "ambit-cni",
      "type": "executable",
      "sources": ["../../cni/native/forwarder.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"],
      "ldflags": ["-static", "-s"]
    },
    {
      "target_name": "ambit-spawner",
      "type": "executable",
      "sources": ["spawner.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    }
  ]
}
