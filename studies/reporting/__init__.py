"""What is read and sent about a study: plain-data views (`views`), the diagnosis of its
curves (`diagnosis`), the figures (`plots`) and what runs when it ends (`study_end`,
`webhook`, `mlflow_export`)."""
