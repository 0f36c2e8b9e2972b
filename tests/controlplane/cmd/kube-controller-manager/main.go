// Command kube-controller-manager is the upstream controller manager, compiled
// from the same pinned k8s.io/kubernetes release as kube-apiserver, so that
// owner references are garbage-collected and deleted namespaces are emptied and
// removed as on a real cluster.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
