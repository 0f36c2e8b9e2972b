// Command etcd is the etcd server at the exact version the pinned
// k8s.io/kubernetes release depends on, so storage and API server always match.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
