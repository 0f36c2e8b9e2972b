// Command kube-apiserver is the upstream API server, compiled from the pinned
// k8s.io/kubernetes release so that tests run against the real validation,
// allocation and admission code rather than a fake.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
