// Package e2e holds the browser test: it starts the real server and drives its pages in
// headless Chromium, the way a reviewer would use them. It has no code outside its tests.
package e2e
