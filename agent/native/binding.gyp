{
  "targets": [
    {
      "target_name": "ambit_sockets",
      "sources": ["sockets.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    }
  ]
}
