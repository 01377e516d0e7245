/* A running evaluation's page: when the evaluation finishes, reload to draw its results. */
window.robauditJobs.liveCard(function (job, last) {
  if (job.status === "succeeded" && last !== "succeeded") window.location.reload();
});
